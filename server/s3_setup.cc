#include "server/s3_setup.h"

#include "workers/storage/s3_object_store.h"

namespace modelsmith {

absl::StatusOr<std::unique_ptr<ObjectStore>> MakeS3Store(const ServerConfig& config, StoreObserver* observer) {
  absl::StatusOr<S3Config> s3 = S3Config::FromEnvironment();
  if (absl::IsNotFound(s3.status())) return std::unique_ptr<ObjectStore>();
  if (!s3.ok()) return s3.status();
  if (!config.s3_endpoint.empty()) {
    s3->endpoint = config.s3_endpoint;
    s3->path_style = true;
  }
  if (!config.s3_region.empty()) s3->region = config.s3_region;
  if (config.s3_addressing == "path") s3->path_style = true;
  if (config.s3_addressing == "virtual") s3->path_style = false;
  s3->part_size_bytes = config.s3_part_size_bytes;
  s3->max_parts_in_flight = config.s3_parts_in_flight;
  s3->max_attempts = config.s3_max_attempts;
  if (absl::Status valid = s3->Validate(); !valid.ok()) return valid;
  return std::unique_ptr<ObjectStore>(std::make_unique<S3ObjectStore>(*std::move(s3), observer));
}

}  // namespace modelsmith
