// S3Client: signed HTTP requests to an S3-compatible store, on libcurl with its built-in AWS
// SigV4 signing, with connection reuse, retries and error mapping.
//
// Traps handled here (shared/reference/toolchain.md §5): curl signs the query exactly as written,
// so every query is sorted and RFC 3986-encoded here, valueless parameters are written "name=",
// and keys are encoded except '/'; curl does not send x-amz-content-sha256, so it is added
// (the body's real SHA-256) and thereby signed; CURLOPT_PATH_AS_IS keeps "." and ".." in keys.
//
// Retries: transport failures (refused, reset, timed out, stalled), 429, 500, 502, 503, 504 and
// RequestTimeout are retried up to max_attempts with exponential backoff and full jitter. Other
// 4xx fail at once: 404 NOT_FOUND, 403 PERMISSION_DENIED, 416 OUT_OF_RANGE, else
// FAILED_PRECONDITION, each naming the operation, bucket and key and S3's error code.
// Thread-safe.
#ifndef MODELSMITH_WORKERS_STORAGE_S3_CLIENT_H_
#define MODELSMITH_WORKERS_STORAGE_S3_CLIENT_H_

#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "workers/storage/s3_config.h"
#include "workers/storage/store_observer.h"

namespace modelsmith {

struct S3Request {
  // A request on one object (or, with an empty key, on the bucket).
  static S3Request For(std::string op, std::string method, std::string bucket, std::string key) {
    S3Request request;
    request.op = std::move(op);
    request.method = std::move(method);
    request.bucket = std::move(bucket);
    request.key = std::move(key);
    return request;
  }

  std::string op;      // metrics label: "get", "put", "head", "list", "delete", "upload_part", ...
  std::string method;  // GET, PUT, POST, HEAD, DELETE
  std::string bucket;
  std::string key;                                         // empty for bucket-level requests
  std::vector<std::pair<std::string, std::string>> query;  // unencoded
  std::span<const std::byte> body;                         // PUT / POST payload
  std::optional<std::pair<uint64_t, uint64_t>> range;      // inclusive byte range for GET
  std::vector<std::string> headers;                        // further "Name: value" lines, signed with the rest
  // When set, the response body must be exactly `sink.size()` bytes and is written there.
  std::span<std::byte> sink;
};

struct S3Response {
  long status = 0;
  std::string body;                            // unless a sink was given
  std::map<std::string, std::string> headers;  // names lowercased
};

class S3Client {
 public:
  // `observer` may be null.
  S3Client(S3Config config, StoreObserver* observer);
  ~S3Client();

  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  absl::StatusOr<S3Response> Send(const S3Request& request);

  const S3Config& config() const { return config_; }

  // RFC 3986 encoding of everything but A-Z a-z 0-9 - _ . ~ (and '/' when keep_slash).
  static std::string UriEncode(absl::string_view text, bool keep_slash);

  // The text of <tag> inside the first <Error> of an S3 XML body, if any.
  static std::string ErrorField(const std::string& xml, const char* tag);

 private:
  struct Attempt;
  void* AcquireHandle();
  void ReleaseHandle(void* handle);
  std::string UrlFor(const S3Request& request) const;
  Attempt Perform(const S3Request& request);

  const S3Config config_;
  StoreObserver* observer_;
  std::mutex mutex_;
  std::vector<void*> idle_handles_;  // CURL*, kept for connection reuse
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_S3_CLIENT_H_
