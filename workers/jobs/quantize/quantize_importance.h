// The importance matrix of a GGUF quantize job (spec.imatrix): read once when the job is
// planned, matched to each tensor as llama-quantize matches it, and recorded in the output's
// metadata as llama-quantize records it.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_IMPORTANCE_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_IMPORTANCE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "modelsmith/v1/specs.pb.h"
#include "workers/formats/gguf.h"
#include "workers/formats/imatrix.h"
#include "workers/jobs/quantize/quantize_plan.h"
#include "workers/storage/storage_router.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

struct JobImportance {
  std::shared_ptr<const ImportanceMatrix> matrix;  // null when the spec names none
  std::string given;                               // spec.imatrix, as the caller wrote it
};

// Reads spec.imatrix (either format). NOT_FOUND / INVALID_ARGUMENT name the field and file.
absl::StatusOr<JobImportance> LoadJobImportance(const v1::QuantizeSpec& spec, const StorageRouter& router);

// The importance values for `tensor` about to be written as `target` (one value per input
// column, times its experts), or null when the matrix has no entry for it.
//   INVALID_ARGUMENT IMATRIX_MISMATCH naming both when the entry's length is not
//     columns x experts (token_embd.weight is exempt: llama.cpp quantizes it without one);
//   FAILED_PRECONDITION IMATRIX_REQUIRED naming the tensor when `target` is one of the
//     lowest-bit types llama-quantize refuses to write without importance data.
absl::StatusOr<const std::vector<float>*> ImportanceFor(const JobImportance& importance, const QuantizePlanner& planner,
                                                        const TensorInfo& tensor, GgmlType target);

// llama-quantize's metadata for a run with an importance matrix, written after
// general.file_type: quantize.imatrix.file (the path as given, at most 127 bytes),
// quantize.imatrix.dataset, quantize.imatrix.entries_count and quantize.imatrix.chunks_count
// (INT32, as llama-quantize c392e50 writes integer overrides).
std::vector<GgufKv> ImportanceKvs(const JobImportance& importance);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_IMPORTANCE_H_
