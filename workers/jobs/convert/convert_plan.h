// Planning a convert job to safetensors: which tensors go where, under which names and dtypes,
// and what the files are called. Opens the input's headers; reads no tensor data.
//
// The rules (what the Hugging Face converter, safetensors bindings/python/convert.py, produces;
// formats.md §1-3):
//   - a torch checkpoint's tied names (aliases: same storage, offset, shape, strides) are written
//     once, under the first name; its non-tensor entries are left out; a Lightning checkpoint's
//     "state_dict" entry is what is converted;
//   - names: `rename` rules apply in order, each to the result of the previous, a rule's pattern
//     matching the whole name (ECMAScript; $1.. in the replacement); two tensors may not end up
//     with one name (RENAME_COLLISION);
//   - dtypes: with `dtype` set, float tensors (F64/F32/F16/BF16/F8) are cast to it unless a `keep`
//     pattern matches their (new) name; integer and bool tensors never change;
//   - files: without max_shard_size, one output file per input file; with it, the shard job's
//     planner (hf_greedy or balanced) over the output sizes. Names are Hugging Face names built
//     from the stem and variant (shard_plan.h): "pytorch_model" becomes "model", as the
//     converter renames it; the index is "<stem>.safetensors.index[.<variant>].json";
//   - every file's metadata is {"format": "pt"} plus a safetensors input's own metadata, plus
//     "<dropped tied name>": "<kept name>" for each tied name whose kept tensor it holds (as
//     safetensors' save_model records it, so that load_model restores the name);
//     tensors sit in the reference writer's order;
//   - a GGUF input of the Llama family (gguf_to_hf.h) gets Hugging Face names and row order and a
//     config.json; its block-quantized tensors are dequantized to `dtype` (F32 when unset).
#ifndef MODELSMITH_WORKERS_JOBS_CONVERT_CONVERT_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_CONVERT_CONVERT_PLAN_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/common/pattern.h"
#include "modelsmith/v1/specs.pb.h"
#include "nlohmann/json.hpp"
#include "workers/formats/model_view.h"
#include "workers/formats/safetensors.h"
#include "workers/jobs/convert/gguf_tokenizer.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

struct ConvertTensor {
  const TensorInfo* source = nullptr;
  std::string name;           // after renaming
  DType dtype = DType::kF32;  // written dtype
  uint64_t size_bytes = 0;    // written bytes
  // GGUF input: output row r is source row row_source[r] (llama.cpp's Q/K order undone); empty
  // when the order is the same.
  std::vector<uint64_t> row_source;
  // A GGUF expert's slice of a stacked tensor: its own shape (row_source picks its rows).
  std::vector<uint64_t> shape_override;
  // Added to every value (a GGUF Gemma norm holds 1 + w; Hugging Face's holds w: -1).
  float add = 0.0f;
  // Whether the values are re-encoded (a dtype change, or `add`), rather than copied.
  bool cast() const { return dtype != source->dtype || add != 0.0f; }
  // The written shape: shape_override, else the source's.
  const std::vector<uint64_t>& shape() const;
  // Read row by row through the ggml decoders: a GGUF block type, or rows reordered.
  bool row_wise() const;
};

struct ConvertFile {
  std::string name;
  std::vector<SafetensorsEntry> entries;      // file order (the reference writer's)
  std::vector<const ConvertTensor*> tensors;  // parallel to entries
  std::string header;                         // serialized header bytes
  uint64_t file_bytes = 0;
};

struct ConvertPlan {
  ModelView model;
  std::vector<ConvertTensor> tensors;  // input order
  std::vector<ConvertFile> files;
  std::string stem;
  std::string index_name;  // set when there is more than one file
  uint64_t output_tensor_bytes = 0;
  std::vector<std::pair<std::string, std::string>> renamed;  // (from, to)
  // GGUF input: the config.json rebuilt from its metadata, and tensors with no HF counterpart.
  std::optional<nlohmann::ordered_json> config;
  TokenizerFiles tokenizer_files;  // GGUF input: its vocabulary as Hugging Face tokenizer files
  std::vector<std::string> dropped;
};

// "f32" "f16" "bf16" "f8_e4m3" "f8_e5m2" (case-insensitive; "fp16"/"float16" style aliases too).
absl::StatusOr<DType> ParseConvertDtype(absl::string_view name);

// A rename rule: a tensor whose whole name matches `pattern` takes `replacement` ($1 ...).
struct ConvertRename {
  Pattern pattern;
  std::string replacement;
};

// The convert spec parsed once, for either target.
struct ConvertOptions {
  v1::ConvertSpec spec;  // validated
  bool gguf = false;     // the GGUF target (convert_gguf_job.h); the fields below are safetensors'
  std::optional<DType> dtype;
  uint64_t max_shard_size_bytes = 0;
  std::vector<ConvertRename> rename;  // compiled, in the spec's order
  std::vector<Pattern> keep;
};

// Field checks without I/O, for either target, and the parse: INVALID_ARGUMENT naming the
// convert.* field.
absl::StatusOr<ConvertOptions> ParseConvertOptions(const v1::ConvertSpec& spec);

// Opens the input and plans a safetensors output (the GGUF target is convert_gguf_job.h's).
// INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION naming the field.
absl::StatusOr<ConvertPlan> MakeConvertPlan(const ConvertOptions& options, const StorageRouter& router);

// The stem the output takes from input file or index name `name`: the part before the first
// '.', without a shard suffix "-00001-of-00002"; "pytorch_model" becomes "model".
std::string DefaultStem(absl::string_view name);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CONVERT_CONVERT_PLAN_H_
