// Which type each tensor gets in a GGUF quantize job. Pure; no I/O.
//
// Rules, in order (the first that applies decides):
//   1. a `tensor_types` override (regex matching the whole name) gives that type;
//   2. a tensor of one dimension (norms, biases) is written as F32, as llama.cpp does;
//   3. a tensor matched by `exclude`, not matched by a non-empty `include`, or with fewer than
//      `min_elements` elements keeps its type;
//   4. otherwise the scheme's type.
// A block type needs the innermost dimension to be a whole number of blocks; a tensor that is
// not keeps its type with a TENSOR_NOT_QUANTIZABLE warning, or fails the job when `strict`.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_PLAN_H_

#include <regex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
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
  // INVALID_ARGUMENT naming the field for a bad regex or type; UNIMPLEMENTED for a scheme that
  // is not built yet (presets, bitsandbytes, optimum-quanto, ChatGLM).
  static absl::StatusOr<QuantizePlanner> Create(const v1::QuantizeSpec& spec);

  GgmlType scheme_type() const { return scheme_; }

  // The decision for one tensor. INVALID_ARGUMENT naming the tensor when it cannot be written
  // to GGUF at all (a dtype GGUF lacks, more than 4 dimensions) or, with `strict`, cannot take
  // the type it should.
  absl::StatusOr<TensorPlan> Plan(const TensorInfo& tensor) const;

 private:
  struct Override {
    std::regex pattern;
    GgmlType type;
  };

  GgmlType scheme_ = GgmlType::kF32;
  std::vector<Override> overrides_;
  std::vector<std::regex> include_;
  std::vector<std::regex> exclude_;
  uint64_t min_elements_ = 0;
  bool strict_ = false;
};

// The GGUF type a stored tensor has: its ggml type for GGUF input, else from its dtype.
absl::StatusOr<GgmlType> SourceGgmlType(const TensorInfo& tensor);

// llama.cpp's general.file_type for a scheme (LLAMA_FTYPE_*: Q4_K is Q4_K_M, and so on).
uint32_t LlamaFileType(GgmlType scheme);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_PLAN_H_
