// The plan of a LoRA merge job: the base opened, every adapter opened, parsed and matched, and
// for each base tensor the updates it receives, in the spec's adapter order. Reads headers,
// configs and the adapters' alpha scalars only.
//
// Bases: safetensors (single or sharded) and GGUF (single or split). A GGUF base of the Llama
// family is matched under its Hugging Face names (gguf_to_hf.h), and the update's rows follow
// llama.cpp's Q/K row permutation; other GGUF bases are matched under their own names. A GGUF
// tensor of a quantized type takes updates like a float one: it is dequantized, merged and
// quantized again in its type (policy REQUANTIZE). A safetensors quantized layout (bitsandbytes
// int8 / NF4 / FP4, optimum-quanto qint8 / qint4, ChatGLM) is matched by its module path, read
// back (quantized_weight_reader.h) and quantized again by the layout kernels with the base's own
// parameters (block size, double quantization, group size), so that every tensor of the group
// keeps its name, dtype and shape. Policy DEQUANTIZE instead writes the merged weight of a
// quantized target as one float tensor (dequantize_dtype) under the weight's name, drops the
// group's other tensors and marks the files that hold them for a rewritten header
// (`rewritten_files`); ChatGLM bases refuse it (FAILED_PRECONDITION LORA_POLICY_UNSUPPORTED:
// their loader quantizes every layer). Not built yet, and refused as UNIMPLEMENTED naming what:
// REQUANTIZE of quanto qfloat8 and fp8 targets, and a group the kernels would write with another
// shape (a bitsandbytes quant_state JSON of another length). A grouped quanto qint4 weight, whose
// checkpoint does not record its shape, is read with the shape its adapter module implies; a
// quantized group that cannot be read back is no merge target (an adapter module naming it is
// a mismatch that says why) and is copied as it is.
//
// PyTorch checkpoints (.bin, single or sharded) are merged in place too: a merged tensor must be
// contiguous and own its storage record alone (else FAILED_PRECONDITION LORA_TARGET_SHARED_STORAGE,
// naming the tensors that share it), and `torch_records` gives the zip fields its new CRC-32
// goes to (`crc_fields`). Policy DEQUANTIZE on a torch base is UNIMPLEMENTED
// (LORA_POLICY_NOT_IMPLEMENTED): it would rewrite the pickle.
//
// Matching is strict (lora_match.h): any mismatch fails the plan with FAILED_PRECONDITION,
// LORA_KEYS_UNMATCHED and a report of each key and its closest base names, unless allow_partial,
// and then the mismatches are returned for the job to report as warnings.
#ifndef MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_PLAN_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "modelsmith/v1/specs.pb.h"
#include "nlohmann/json.hpp"
#include "workers/formats/lora_adapter.h"
#include "workers/formats/model_view.h"
#include "workers/jobs/quantize/layout_quantize_plan.h"
#include "workers/jobs/lora_merge/lora_match.h"
#include "workers/formats/quantized_weight_reader.h"
#include "workers/storage/storage_router.h"
#include "workers/tensor/ggml_types.h"

namespace modelsmith {

struct LoraAdapterInput {
  std::string uri;      // as opened (canonical)
  double strength = 1;  // the spec's, 0 read as 1
  ModelView view;
  LoraAdapter adapter;  // points into view.tensors
  LoraMatch match;      // bases point into LoraMergePlan::candidates
};

// One adapter module's update of one base tensor.
struct MergeUpdate {
  const LoraAdapterInput* adapter;
  const LoraTarget* target;
};

struct MergeTensor {
  const TensorInfo* base;       // as stored
  std::string type;             // "F16", "Q8_0", ...
  uint64_t rows = 0, cols = 0;  // as stored, flattened
  // GGUF Q/K projections: the stored row of each Hugging Face row (empty when the same).
  std::vector<uint64_t> row_of_hf_row;
  std::vector<MergeUpdate> updates;  // in adapter order
  // A weight held in a safetensors quantized layout (bnb, quanto, ChatGLM): read back through
  // `reader`, merged, and quantized again by `layout` into exactly the base's tensors `group`
  // (indices into base.tensors: the weight and its companions, same names, dtypes and shapes).
  const QuantizedWeightReader* reader = nullptr;
  std::optional<LayoutSpec> layout;
  LayoutTensorPlan layout_plan;
  std::vector<size_t> group;
  // Policy DEQUANTIZE on a quantized weight: written as this float type under the weight's name
  // (a group's stand-in "<module>.weight") and shape; the group's other tensors are dropped.
  std::optional<GgmlType> dequantize_to;

  // The name, shape and type the merged weight is written under.
  const std::string& written_name() const;
  std::vector<uint64_t> written_shape() const;
  std::string written_type() const;
  bool quantized() const;  // the stored weight is quantized (GGUF type or layout group)
};

struct SkippedKey {
  const LoraAdapterInput* adapter;
  LoraMismatch mismatch;
};

struct LoraMergePlan {
  ModelView base;
  std::optional<nlohmann::json> config;  // config.json beside a safetensors base
  // The base tensors under the names adapters use (Hugging Face names for a Llama GGUF), in the
  // base's order; candidate_of[i] indexes base.tensors.
  std::vector<TensorInfo> candidates;
  std::vector<size_t> candidate_of;
  std::vector<std::unique_ptr<LoraAdapterInput>> adapters;
  RequantizeInputs requantize;            // the base's quantized layouts, read back
  std::map<size_t, MergeTensor> merged;   // by index into base.tensors (a group's first tensor)
  std::map<size_t, size_t> group_member;  // every tensor of a merged group -> its key in `merged`
  std::vector<SkippedKey> skipped;        // allow_partial only
  uint32_t modules_matched = 0;
  // Files whose header changes (a dequantized weight or a dropped group tensor in them); the
  // others are mirrored with the base's header.
  std::set<size_t> rewritten_files;
  // A torch base: for every tensor written anew (merged, or a member of a requantized group),
  // the offsets of the zip fields that hold its storage record's CRC-32 (zip_archive.h).
  std::map<size_t, std::vector<uint64_t>> crc_fields;

  bool gguf() const { return base.format == "gguf"; }
};

// INVALID_ARGUMENT naming the field for a bad spec, without I/O.
absl::Status ValidateLoraMergeSpec(const v1::LoraMergeSpec& spec);

// NOT_FOUND / INVALID_ARGUMENT for unreadable inputs (field lora_merge.base or
// lora_merge.adapters[i]), FAILED_PRECONDITION LORA_KEYS_UNMATCHED, UNIMPLEMENTED as above.
absl::StatusOr<std::unique_ptr<LoraMergePlan>> MakeLoraMergePlan(const v1::LoraMergeSpec& spec,
                                                                 const StorageRouter& router);

// The text of a LORA_KEYS_UNMATCHED failure or warning for one key.
std::string DescribeMismatch(const LoraMismatch& m);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_PLAN_H_
