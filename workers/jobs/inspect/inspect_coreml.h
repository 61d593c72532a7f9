// InspectModel on a Core ML package (inspect.h): its specification version, opset, functions,
// inputs and outputs, op counts, and every weight's stored and dense bytes and compression
// (mil_program.h), from the package read as bisect reads it.
#ifndef MODELSMITH_WORKERS_JOBS_INSPECT_INSPECT_COREML_H_
#define MODELSMITH_WORKERS_JOBS_INSPECT_INSPECT_COREML_H_

#include "absl/status/statusor.h"
#include "modelsmith/v1/model.pb.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

absl::StatusOr<v1::ModelInfo> InspectCoreMl(const Location& location);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_INSPECT_INSPECT_COREML_H_
