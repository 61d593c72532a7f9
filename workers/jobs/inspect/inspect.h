// InspectModel: a checkpoint's format, files, tensors and metadata, from headers only.
#ifndef MODELSMITH_WORKERS_JOBS_INSPECT_INSPECT_H_
#define MODELSMITH_WORKERS_JOBS_INSPECT_INSPECT_H_

#include "absl/strings/string_view.h"
#include <string_view>

#include "absl/status/statusor.h"
#include "modelsmith/v1/model.pb.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

// Resolves `uri` through `router` (roots apply) and describes the model there.
absl::StatusOr<v1::ModelInfo> InspectModel(const StorageRouter& router, absl::string_view uri);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_INSPECT_INSPECT_H_
