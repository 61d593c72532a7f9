// Builds the S3 store from the server's flags and the standard AWS environment.
#ifndef MODELSMITH_SERVER_S3_SETUP_H_
#define MODELSMITH_SERVER_S3_SETUP_H_

#include <memory>

#include "absl/status/statusor.h"
#include "server/config.h"
#include "workers/storage/object_store.h"
#include "workers/storage/store_observer.h"

namespace modelsmith {

// Null (and OK) when no AWS credentials are set: s3:// uris are then FAILED_PRECONDITION.
// INVALID_ARGUMENT for an unusable configuration.
absl::StatusOr<std::unique_ptr<ObjectStore>> MakeS3Store(const ServerConfig& config, StoreObserver* observer);

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_S3_SETUP_H_
