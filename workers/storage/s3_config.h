// S3Config: where and how to reach an S3-compatible store.
#ifndef MODELSMITH_WORKERS_STORAGE_S3_CONFIG_H_
#define MODELSMITH_WORKERS_STORAGE_S3_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace modelsmith {

struct S3Config {
  // "http://127.0.0.1:9000" for a local server; empty means AWS: https://s3.<region>.amazonaws.com.
  std::string endpoint;
  std::string region = "us-east-1";
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
  // Path style ("endpoint/bucket/key") or virtual-hosted ("bucket.endpoint/key"). Defaults to
  // path style for a custom endpoint and virtual-hosted for AWS.
  bool path_style = false;
  uint64_t part_size_bytes = 16 << 20;  // multipart part size; S3 needs >= 5 MiB but the last
  int max_parts_in_flight = 4;          // parts uploading at once per object
  int max_attempts = 6;                 // per request, the first included
  std::chrono::milliseconds base_backoff{200};
  std::chrono::milliseconds max_backoff{5000};
  long connect_timeout_seconds = 10;
  // A transfer slower than 1 KB/s for this long is treated as a dropped connection.
  long stall_timeout_seconds = 30;
  uint64_t read_ahead_bytes = 4 << 20;  // small reads fetch this much and serve later ones
  int list_page_size = 1000;            // ListObjectsV2 max-keys

  // The standard AWS variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
  // AWS_REGION (else AWS_DEFAULT_REGION), AWS_ENDPOINT_URL (else AWS_ENDPOINT_URL_S3), and
  // MODELSMITH_S3_PATH_STYLE=true|false. NOT_FOUND when no credentials are set.
  static absl::StatusOr<S3Config> FromEnvironment();

  // INVALID_ARGUMENT for an unusable configuration (bad endpoint, part size under 5 MiB, ...).
  absl::Status Validate() const;

  // The endpoint with scheme, without trailing slash.
  std::string EffectiveEndpoint() const;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_S3_CONFIG_H_
