#include "workers/jobs/quantize/quantize_importance.h"

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {

absl::StatusOr<JobImportance> LoadJobImportance(const v1::QuantizeSpec& spec, const StorageRouter& router) {
  JobImportance importance;
  if (spec.imatrix().empty()) return importance;
  importance.given = spec.imatrix();
  absl::StatusOr<Location> where = router.Resolve(spec.imatrix());
  if (!where.ok()) return WithReason(where.status(), ReasonOf(where.status()), {{"field", "quantize.imatrix"}});
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> file = where->store->OpenForRead(where->uri);
  if (!file.ok()) return WithReason(file.status(), ReasonOf(file.status()), {{"field", "quantize.imatrix"}});
  absl::StatusOr<ImportanceMatrix> matrix = ReadImatrix(**file);
  if (!matrix.ok()) return WithReason(matrix.status(), ReasonOf(matrix.status()), {{"field", "quantize.imatrix"}});
  importance.matrix = std::make_shared<const ImportanceMatrix>(*std::move(matrix));
  return importance;
}

absl::StatusOr<const std::vector<float>*> ImportanceFor(const JobImportance& importance, const QuantizePlanner& planner,
                                                        const TensorInfo& tensor, GgmlType target) {
  const std::vector<float>* values = nullptr;
  if (importance.matrix != nullptr) {
    auto entry = importance.matrix->values.find(tensor.name);
    if (entry != importance.matrix->values.end()) {
      // ggml order: ne[0] columns, ne[2] experts.
      const uint64_t columns = tensor.shape.back();
      const uint64_t experts = tensor.shape.size() >= 3 ? tensor.shape[tensor.shape.size() - 3] : 1;
      if (entry->second.size() == columns * experts) {
        values = &entry->second;
      } else if (tensor.name != "token_embd.weight") {
        return MakeError(absl::StatusCode::kInvalidArgument, "IMATRIX_MISMATCH",
                         absl::StrCat("importance matrix '", importance.given, "' has ", entry->second.size(),
                                      " values for tensor '", tensor.name, "', which needs ", columns * experts, " (",
                                      columns, " columns x ", experts, " experts)"),
                         {{"tensor", tensor.name}, {"file", importance.given}, {"field", "quantize.imatrix"}});
      }
    }
  }
  if (values == nullptr && planner.RequiresImportance(tensor.name, target)) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "IMATRIX_REQUIRED",
                     absl::StrCat("tensor '", tensor.name, "' would be ", GgmlTypeName(target),
                                  ", which needs importance data (llama-quantize refuses it too: the result is "
                                  "garbage); ",
                                  importance.matrix == nullptr ? "set quantize.imatrix"
                                                               : "the importance matrix has no entry for it"),
                     {{"tensor", tensor.name}, {"field", "quantize.imatrix"}});
  }
  return values;
}

std::vector<GgufKv> ImportanceKvs(const JobImportance& importance) {
  std::vector<GgufKv> kvs;
  if (importance.matrix == nullptr) return kvs;
  kvs.push_back(GgufKv::String("quantize.imatrix.file", importance.given.substr(0, 127)));
  if (!importance.matrix->dataset.empty()) {
    kvs.push_back(GgufKv::String("quantize.imatrix.dataset", importance.matrix->dataset.substr(0, 127)));
  }
  kvs.push_back(GgufKv::I32("quantize.imatrix.entries_count", static_cast<int32_t>(importance.matrix->values.size())));
  if (importance.matrix->chunks > 0) {
    kvs.push_back(GgufKv::I32("quantize.imatrix.chunks_count", importance.matrix->chunks));
  }
  return kvs;
}

}  // namespace modelsmith
