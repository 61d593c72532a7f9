// Which type each tensor gets in a GGUF quantize job. Pure; no I/O.
//
// Rules, in order (the first that applies decides):
//   1. a `tensor_types` override (an RE2 pattern matching the whole name) gives that type;
//   2. a tensor of one dimension (norms, biases) is written as F32, as llama.cpp does;
//   3. a tensor matched by `exclude`, not matched by a non-empty `include`, or with fewer than
//      `min_elements` elements keeps its type;
//   4. otherwise the scheme's type; for the presets Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S
//      Q5_K_M, llama.cpp's choice per tensor (llama_tensor_get_type, src/llama-quant.cpp):
//      output.weight (or token_embd.weight when there is no output) Q6_K (Q8_0 for Falcon or rows
//      that are not whole super-blocks); attention-V, FFN-down, attention-output and fused QKV
//      weights by the preset's rules, which count layers in llama-quantize's order (the first and
//      last eighth and every third between, "use_more_bits"); the 8-expert and 70B (llama, 80
//      layers) cases; rows that are not whole 256-element super-blocks fall back to Q5_0, Q5_1,
//      Q8_0 (or F16).
// A block type needs the innermost dimension to be a whole number of blocks; a tensor that is
// not keeps its type with a TENSOR_NOT_QUANTIZABLE warning, or fails the job when `strict`.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_PLAN_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/common/pattern.h"
#include "modelsmith/v1/specs.pb.h"
#include "workers/tensor/ggml_types.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

struct TensorPlan {
  GgmlType source_type;  // as stored (F32/F16/BF16/integers, or a quantized GGUF type)
  GgmlType target_type;
  bool warn_not_quantizable = false;
};

class QuantizePlanner {
 public:
  // INVALID_ARGUMENT naming the field for a bad regex or an unknown type or scheme.
  static absl::StatusOr<QuantizePlanner> Create(const v1::QuantizeSpec& spec);

  GgmlType scheme_type() const { return scheme_; }
  bool is_preset() const { return preset_ != Preset::kNone; }
  // llama.cpp's general.file_type for the scheme (a preset's own number).
  uint32_t file_type() const;

  // What the presets' rules read from the model's metadata.
  struct ModelFacts {
    std::string arch = "llama";  // general.architecture
    int n_layer = 0;             // <arch>.block_count (0: count the blk.N layers)
    int n_expert = 0;            // <arch>.expert_count
  };
  // Presets decide by the tensor's position among its class, so they need the whole model first,
  // in llama-quantize's order (by layer, then name). A no-op for plain types.
  void PrepareForModel(const std::vector<const TensorInfo*>& tensors, const ModelFacts& facts);

  // The decision for one tensor. INVALID_ARGUMENT naming the tensor when it cannot be written
  // to GGUF at all (a dtype GGUF lacks, more than 4 dimensions) or, with `strict`, cannot take
  // the type it should.
  absl::StatusOr<TensorPlan> Plan(const TensorInfo& tensor) const;

 private:
  struct Override {
    Pattern pattern;
    GgmlType type;
  };

  GgmlType scheme_ = GgmlType::kF32;
  std::vector<Override> overrides_;
  std::vector<Pattern> include_;
  std::vector<Pattern> exclude_;
  uint64_t min_elements_ = 0;
  bool strict_ = false;
  enum class Preset { kNone, kQ3_K_S, kQ3_K_M, kQ3_K_L, kQ4_K_S, kQ4_K_M, kQ5_K_S, kQ5_K_M };
  Preset preset_ = Preset::kNone;
  std::map<std::string, GgmlType> preset_types_;
};

// The GGUF type a stored tensor has: its ggml type for GGUF input, else from its dtype.
absl::StatusOr<GgmlType> SourceGgmlType(const TensorInfo& tensor);

// llama.cpp's general.file_type for a scheme (LLAMA_FTYPE_*: Q4_K is Q4_K_M, and so on).
uint32_t LlamaFileType(GgmlType scheme);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_PLAN_H_
