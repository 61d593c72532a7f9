#include "workers/storage/s3_client.h"

#include <curl/curl.h>
#include <tinyxml2.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"
#include "workers/storage/checksum.h"

namespace modelsmith {
namespace {

constexpr size_t kMaxResponseBodyBytes = 64 << 20;

struct Transfer {
  const S3Request* request = nullptr;
  size_t read_offset = 0;  // into request->body
  size_t sink_offset = 0;  // into request->sink
  bool sink_overflow = false;
  S3Response response;
};

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  Transfer& t = *static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (!t.request->sink.empty()) {
    if (t.sink_offset + n > t.request->sink.size()) {
      t.sink_overflow = true;
      return 0;  // aborts the transfer
    }
    std::memcpy(t.request->sink.data() + t.sink_offset, data, n);
    t.sink_offset += n;
    return n;
  }
  if (t.response.body.size() + n > kMaxResponseBodyBytes) return 0;
  t.response.body.append(data, n);
  return n;
}

size_t OnHeader(char* data, size_t size, size_t count, void* user) {
  Transfer& t = *static_cast<Transfer*>(user);
  const size_t n = size * count;
  absl::string_view line(data, n);
  const size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    t.response.headers[absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, colon)))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return n;
}

size_t OnUpload(char* buffer, size_t size, size_t count, void* user) {
  Transfer& t = *static_cast<Transfer*>(user);
  const size_t n = std::min(size * count, t.request->body.size() - t.read_offset);
  std::memcpy(buffer, t.request->body.data() + t.read_offset, n);
  t.read_offset += n;
  return n;
}

bool IsRetryableCurlError(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return true;
    default: return false;
  }
}

bool IsRetryableStatus(long status, const std::string& body) {
  if (status == 429 || status == 500 || status == 502 || status == 503 || status == 504) return true;
  return status == 400 && S3Client::ErrorField(body, "Code") == "RequestTimeout";
}

absl::StatusCode CodeForStatus(long status) {
  switch (status) {
    case 404: return absl::StatusCode::kNotFound;
    case 401:
    case 403: return absl::StatusCode::kPermissionDenied;
    case 416: return absl::StatusCode::kOutOfRange;
    default: return absl::StatusCode::kFailedPrecondition;
  }
}

std::string Describe(const S3Request& r) {
  return absl::StrCat("S3 ", r.op, " s3://", r.bucket, r.key.empty() ? "" : "/", r.key);
}

}  // namespace

struct S3Client::Attempt {
  absl::StatusOr<S3Response> result;
  bool retryable = false;
};

S3Client::S3Client(S3Config config, StoreObserver* observer) : config_(std::move(config)), observer_(observer) {
  static std::once_flag curl_init;
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

S3Client::~S3Client() {
  for (void* handle : idle_handles_) curl_easy_cleanup(static_cast<CURL*>(handle));
}

void* S3Client::AcquireHandle() {
  std::lock_guard lock(mutex_);
  if (idle_handles_.empty()) return curl_easy_init();
  void* handle = idle_handles_.back();
  idle_handles_.pop_back();
  return handle;
}

void S3Client::ReleaseHandle(void* handle) {
  std::lock_guard lock(mutex_);
  idle_handles_.push_back(handle);
}

std::string S3Client::UriEncode(absl::string_view text, bool keep_slash) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

std::string S3Client::ErrorField(const std::string& xml, const char* tag) {
  tinyxml2::XMLDocument doc;
  if (xml.empty() || doc.Parse(xml.data(), xml.size()) != tinyxml2::XML_SUCCESS) return "";
  const tinyxml2::XMLElement* error = doc.FirstChildElement("Error");
  if (error == nullptr) return "";
  const tinyxml2::XMLElement* field = error->FirstChildElement(tag);
  return field != nullptr && field->GetText() != nullptr ? field->GetText() : "";
}

std::string S3Client::UrlFor(const S3Request& request) const {
  const std::string endpoint = config_.EffectiveEndpoint();
  std::string url;
  const std::string path = request.key.empty() ? "" : absl::StrCat("/", UriEncode(request.key, true));
  if (config_.path_style) {
    url = absl::StrCat(endpoint, "/", request.bucket, path);
  } else {
    const size_t scheme_end = endpoint.find("://") + 3;
    url = absl::StrCat(endpoint.substr(0, scheme_end), request.bucket, ".", endpoint.substr(scheme_end),
                       path.empty() ? "/" : path);
  }
  // curl signs the query as written: it must already be canonical (sorted, encoded, "k=v").
  std::vector<std::pair<std::string, std::string>> query;
  for (const auto& [name, value] : request.query) query.emplace_back(UriEncode(name, false), UriEncode(value, false));
  std::sort(query.begin(), query.end());
  for (size_t i = 0; i < query.size(); ++i) {
    absl::StrAppend(&url, i == 0 ? "?" : "&", query[i].first, "=", query[i].second);
  }
  return url;
}

S3Client::Attempt S3Client::Perform(const S3Request& request) {
  CURL* curl = static_cast<CURL*>(AcquireHandle());
  curl_easy_reset(curl);
  Transfer transfer;
  transfer.request = &request;
  const std::string url = UrlFor(request);
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, config_.connect_timeout_seconds);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, config_.stall_timeout_seconds);
  const std::string sigv4 = absl::StrCat("aws:amz:", config_.region, ":s3");
  curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, sigv4.c_str());
  const std::string credentials = absl::StrCat(config_.access_key_id, ":", config_.secret_access_key);
  curl_easy_setopt(curl, CURLOPT_USERPWD, credentials.c_str());
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);

  curl_slist* headers = nullptr;
  const std::string payload_hash =
      Sha256Hex(absl::string_view(reinterpret_cast<const char*>(request.body.data()), request.body.size()));
  headers = curl_slist_append(headers, absl::StrCat("x-amz-content-sha256: ", payload_hash).c_str());
  if (!config_.session_token.empty()) {
    headers = curl_slist_append(headers, absl::StrCat("x-amz-security-token: ", config_.session_token).c_str());
  }
  if (request.range) {
    headers = curl_slist_append(
        headers, absl::StrFormat("Range: bytes=%d-%d", request.range->first, request.range->second).c_str());
  }
  for (const std::string& header : request.headers) headers = curl_slist_append(headers, header.c_str());
  // No "Expect: 100-continue" round trip before bodies.
  headers = curl_slist_append(headers, "Expect:");
  if (request.method == "PUT") {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, OnUpload);
    curl_easy_setopt(curl, CURLOPT_READDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
  } else if (request.method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS,
                     request.body.empty() ? "" : reinterpret_cast<const char*>(request.body.data()));
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
    headers = curl_slist_append(headers, "Content-Type: application/xml");
  } else if (request.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (request.method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

  const auto start = std::chrono::steady_clock::now();
  const CURLcode code = curl_easy_perform(curl);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_off_t received = 0;
  curl_easy_getinfo(curl, CURLINFO_SIZE_DOWNLOAD_T, &received);
  curl_slist_free_all(headers);
  ReleaseHandle(curl);
  if (observer_ != nullptr) {
    observer_->OnRequest("s3", request.op, code == CURLE_OK ? absl::StrCat(status) : "error", seconds,
                         transfer.read_offset, static_cast<uint64_t>(received));
  }

  Attempt attempt;
  if (code != CURLE_OK && !(transfer.sink_overflow && status >= 200 && status < 300)) {
    attempt.retryable = IsRetryableCurlError(code);
    attempt.result = MakeError(absl::StatusCode::kUnavailable, "STORE_UNAVAILABLE",
                               absl::StrCat(Describe(request), ": ", curl_easy_strerror(code)),
                               {{"uri", absl::StrCat("s3://", request.bucket, "/", request.key)}});
    return attempt;
  }
  transfer.response.status = status;
  if (status >= 200 && status < 300) {
    if (!request.sink.empty() && (transfer.sink_overflow || transfer.sink_offset != request.sink.size())) {
      attempt.retryable = true;  // a short or long body: the connection broke or the object changed
      attempt.result = MakeError(absl::StatusCode::kDataLoss, "STORE_SHORT_READ",
                                 absl::StrCat(Describe(request), ": expected ", request.sink.size(), " bytes, got ",
                                              transfer.sink_overflow ? "more" : absl::StrCat(transfer.sink_offset)));
      return attempt;
    }
    attempt.result = std::move(transfer.response);
    return attempt;
  }
  const std::string s3_code = ErrorField(transfer.response.body, "Code");
  const std::string s3_message = ErrorField(transfer.response.body, "Message");
  attempt.retryable = IsRetryableStatus(status, transfer.response.body);
  attempt.result =
      MakeError(attempt.retryable ? absl::StatusCode::kUnavailable : CodeForStatus(status),
                status == 404   ? "STORE_NOT_FOUND"
                : status == 403 ? "STORE_ACCESS_DENIED"
                                : "STORE_REQUEST_FAILED",
                absl::StrCat(Describe(request), ": HTTP ", status, s3_code.empty() ? "" : absl::StrCat(" ", s3_code),
                             s3_message.empty() ? "" : absl::StrCat(": ", s3_message)),
                {{"uri", absl::StrCat("s3://", request.bucket, "/", request.key)}});
  return attempt;
}

absl::StatusOr<S3Response> S3Client::Send(const S3Request& request) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  for (int attempt = 1;; ++attempt) {
    Attempt result = Perform(request);
    if (result.result.ok() || !result.retryable || attempt >= config_.max_attempts) {
      if (!result.result.ok() && result.retryable) {
        return Annotate(result.result.status(), absl::StrCat("gave up after ", attempt, " attempts"));
      }
      return std::move(result.result);
    }
    if (observer_ != nullptr) observer_->OnRetry("s3", request.op);
    // Full jitter: uniform in [0, min(max, base * 2^(attempt-1))].
    const int64_t ceiling =
        std::min<int64_t>(config_.max_backoff.count(), config_.base_backoff.count() << std::min(attempt - 1, 20));
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(0, ceiling)(rng)));
  }
}

}  // namespace modelsmith
