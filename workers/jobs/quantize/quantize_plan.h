// Which type each tensor gets in a GGUF quantize job. Pure; no I/O.
//
// `scheme` is one of llama-quantize's ftype names (llama_ftypes.h) with its meaning. Rules, in
// order (the first that applies decides):
//   1. a `tensor_types` override (an RE2 pattern matching the whole name) gives that type;
//   2. a tensor of one dimension (norms, biases) is written as F32, as llama.cpp's converter does;
//   3. a tensor matched by `exclude`, not matched by a non-empty `include`, with fewer than
//      `min_elements` elements, or one llama-quantize does not quantize (LlamaQuantizesTensor:
//      norms, the MoE router, position embeddings, ...) keeps its type;
//   4. otherwise the ftype's base type with `pure` or for F16/BF16/F32; else llama.cpp's choice
//      per tensor (llama_tensor_types.h), which needs the whole model first (PrepareForModel);
//   5. `token_embedding_type` / `output_tensor_type` decide those two tensors last.
// A block type needs the innermost dimension to be a whole number of blocks; a tensor that is
// not keeps its type with a TENSOR_NOT_QUANTIZABLE warning, or fails the job when `strict`.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_PLAN_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/common/pattern.h"
#include "workers/jobs/quantize/llama_ftypes.h"
#include "workers/jobs/quantize/llama_tensor_types.h"
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

  // The ftype's base type (llama-quantize's default_type): Q4_K for Q4_K_M.
  GgmlType scheme_type() const { return ftype_.base; }
  LlamaFtype ftype() const { return ftype_.ftype; }
  // llama.cpp's general.file_type for the scheme.
  uint32_t file_type() const { return static_cast<uint32_t>(ftype_.ftype); }

  using ModelFacts = LlamaModelFacts;
  // llama.cpp's rules decide by a tensor's position among its class, so they need the whole model
  // first, in llama-quantize's order (by layer, then name).
  void PrepareForModel(const std::vector<const TensorInfo*>& tensors, const ModelFacts& facts);

  // The decision for one tensor. INVALID_ARGUMENT naming the tensor when it cannot be written
  // to GGUF at all (a dtype GGUF lacks, more than 4 dimensions) or, with `strict`, cannot take
  // the type it should.
  absl::StatusOr<TensorPlan> Plan(const TensorInfo& tensor) const;

  // Whether llama-quantize refuses to write `type` for the tensor without importance data.
  bool RequiresImportance(const std::string& name, GgmlType type) const {
    return LlamaRequiresImportance(ftype_.ftype, name, type);
  }

 private:
  struct Override {
    Pattern pattern;
    GgmlType type;
  };

  LlamaFtypeInfo ftype_{"F32", LlamaFtype::kAllF32, GgmlType::kF32};
  bool pure_ = false;
  bool leave_output_tensor_ = false;
  std::optional<GgmlType> output_tensor_type_;
  std::optional<GgmlType> token_embedding_type_;
  std::vector<Override> overrides_;
  std::vector<Pattern> include_;
  std::vector<Pattern> exclude_;
  uint64_t min_elements_ = 0;
  bool strict_ = false;
  std::map<std::string, GgmlType> chosen_types_;  // PrepareForModel's choice per quantized tensor
};

// The GGUF type a stored tensor has: its ggml type for GGUF input, else from its dtype.
absl::StatusOr<GgmlType> SourceGgmlType(const TensorInfo& tensor);

// llama.cpp's general.file_type for a file whose weights are `type` (LLAMA_FTYPE_*: Q4_K is
// Q4_K_M, and so on), as its converter writes it.
uint32_t LlamaFileType(GgmlType type);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_PLAN_H_
