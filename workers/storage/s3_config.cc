#include "workers/storage/s3_config.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace modelsmith {
namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

}  // namespace

absl::StatusOr<S3Config> S3Config::FromEnvironment() {
  S3Config config;
  config.access_key_id = Env("AWS_ACCESS_KEY_ID");
  config.secret_access_key = Env("AWS_SECRET_ACCESS_KEY");
  config.session_token = Env("AWS_SESSION_TOKEN");
  if (config.access_key_id.empty() || config.secret_access_key.empty()) {
    return absl::NotFoundError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set");
  }
  std::string region = Env("AWS_REGION");
  if (region.empty()) region = Env("AWS_DEFAULT_REGION");
  if (!region.empty()) config.region = region;
  config.endpoint = Env("AWS_ENDPOINT_URL_S3");
  if (config.endpoint.empty()) config.endpoint = Env("AWS_ENDPOINT_URL");
  config.path_style = !config.endpoint.empty();
  std::string path_style = absl::AsciiStrToLower(Env("MODELSMITH_S3_PATH_STYLE"));
  if (path_style == "true" || path_style == "1") config.path_style = true;
  if (path_style == "false" || path_style == "0") config.path_style = false;
  return config;
}

absl::Status S3Config::Validate() const {
  if (!endpoint.empty() && !absl::StartsWith(endpoint, "http://") && !absl::StartsWith(endpoint, "https://")) {
    return absl::InvalidArgumentError(absl::StrCat("S3 endpoint '", endpoint, "' must start with http:// or https://"));
  }
  if (part_size_bytes < (5 << 20) || part_size_bytes > (uint64_t{5} << 30)) {
    return absl::InvalidArgumentError("S3 part size must be between 5 MiB and 5 GiB");
  }
  if (max_parts_in_flight < 1 || max_attempts < 1) {
    return absl::InvalidArgumentError("S3 parts in flight and attempts must be at least 1");
  }
  if (region.empty()) return absl::InvalidArgumentError("S3 region is empty");
  return absl::OkStatus();
}

std::string S3Config::EffectiveEndpoint() const {
  std::string e = endpoint.empty() ? absl::StrCat("https://s3.", region, ".amazonaws.com") : endpoint;
  while (!e.empty() && e.back() == '/') e.pop_back();
  return e;
}

}  // namespace modelsmith
