#include "workers/storage/s3_object_store.h"

#include <tinyxml2.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

using tinyxml2::XMLDocument;
using tinyxml2::XMLElement;

std::string TextOf(const XMLElement* parent, const char* tag) {
  const XMLElement* e = parent == nullptr ? nullptr : parent->FirstChildElement(tag);
  return e != nullptr && e->GetText() != nullptr ? e->GetText() : "";
}

absl::Status MalformedResponse(absl::string_view what, absl::string_view uri) {
  return MakeError(absl::StatusCode::kUnavailable, "STORE_BAD_RESPONSE",
                   absl::StrCat("S3 ", what, " for '", uri, "': the response could not be understood"),
                   {{"uri", std::string(uri)}});
}

class S3Object final : public RandomAccessObject {
 public:
  S3Object(std::shared_ptr<S3Client> client, std::string uri, std::string bucket, std::string key, uint64_t size)
      : client_(std::move(client)),
        uri_(std::move(uri)),
        bucket_(std::move(bucket)),
        key_(std::move(key)),
        size_(size) {}

  const std::string& uri() const override { return uri_; }
  uint64_t size_bytes() const override { return size_; }

  absl::Status ReadAt(uint64_t offset, size_t length, std::byte* dst) const override {
    if (offset > size_ || length > size_ - offset) {
      return absl::OutOfRangeError(absl::StrCat("read of ", length, " bytes at offset ", offset, " past the end of '",
                                                uri_, "' (", size_, " bytes)"));
    }
    if (length == 0) return absl::OkStatus();
    const uint64_t window = client_->config().read_ahead_bytes;
    if (length >= window) return Fetch(offset, {dst, length});
    std::lock_guard lock(mutex_);
    if (offset < cache_offset_ || offset + length > cache_offset_ + cache_.size()) {
      const uint64_t fetch = std::min<uint64_t>(window, size_ - offset);
      cache_.resize(fetch);
      if (absl::Status s = Fetch(offset, {cache_.data(), cache_.size()}); !s.ok()) {
        cache_.clear();
        return s;
      }
      cache_offset_ = offset;
    }
    std::memcpy(dst, cache_.data() + (offset - cache_offset_), length);
    return absl::OkStatus();
  }

 private:
  absl::Status Fetch(uint64_t offset, std::span<std::byte> into) const {
    S3Request request = S3Request::For("get", "GET", bucket_, key_);
    request.range = std::make_pair(offset, offset + into.size() - 1);
    request.sink = into;
    return client_->Send(request).status();
  }

  std::shared_ptr<S3Client> client_;
  std::string uri_;
  std::string bucket_;
  std::string key_;
  uint64_t size_;
  mutable std::mutex mutex_;  // guards the read-ahead window
  mutable std::vector<std::byte> cache_;
  mutable uint64_t cache_offset_ = 0;
};

// S3 may answer 200 to a complete or a copy and put the error in the body: that answer as the error.
absl::StatusOr<S3Response> ErrorInBody(absl::StatusOr<S3Response> response, const std::string& what) {
  if (response.ok() && !S3Client::ErrorField(response->body, "Code").empty()) {
    return MakeError(absl::StatusCode::kUnavailable, "STORE_REQUEST_FAILED",
                     absl::StrCat(what, ": ", S3Client::ErrorField(response->body, "Code"), ": ",
                                  S3Client::ErrorField(response->body, "Message")));
  }
  return response;
}

class S3Writer final : public ObjectWriter {
 public:
  S3Writer(std::shared_ptr<S3Client> client, std::string uri, std::string bucket, std::string key)
      : client_(std::move(client)), uri_(std::move(uri)), bucket_(std::move(bucket)), key_(std::move(key)) {
    buffer_.reserve(client_->config().part_size_bytes);
  }
  ~S3Writer() override { Abort(); }

  const std::string& uri() const override { return uri_; }
  uint64_t bytes_written() const override { return written_; }

  absl::Status Append(std::span<const std::byte> data) override {
    if (state_ != State::kOpen) return absl::FailedPreconditionError("writer is not open");
    const uint64_t part_size = client_->config().part_size_bytes;
    while (!data.empty()) {
      const size_t take = std::min<size_t>(data.size(), part_size - buffer_.size());
      buffer_.insert(buffer_.end(), data.begin(), data.begin() + take);
      data = data.subspan(take);
      written_ += take;
      if (buffer_.size() == part_size) {
        if (absl::Status s = ShipPart(); !s.ok()) return Fail(s);
      }
    }
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    if (state_ != State::kOpen) return absl::FailedPreconditionError("writer is not open");
    // The rest becomes the last part (parts may be small when last), and nothing stays buffered.
    if (!buffer_.empty() || upload_id_.empty()) {
      if (absl::Status s = ShipPart(); !s.ok()) return Fail(s);
    }
    if (absl::Status s = WaitForParts(0); !s.ok()) return Fail(s);
    state_ = State::kSynced;
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    if (state_ == State::kClosed) return absl::FailedPreconditionError("writer is closed");
    if (state_ == State::kOpen && upload_id_.empty()) return PutWhole();
    if (state_ == State::kOpen) {
      if (absl::Status s = Sync(); !s.ok()) return s;
    }
    if (absl::Status s = WaitForParts(0); !s.ok()) return Fail(s);
    std::string xml = "<CompleteMultipartUpload>";
    for (size_t i = 0; i < etags_.size(); ++i) {
      absl::StrAppend(&xml, "<Part><PartNumber>", i + 1, "</PartNumber><ETag>", etags_[i], "</ETag></Part>");
    }
    xml += "</CompleteMultipartUpload>";
    S3Request request = Base("complete_multipart", "POST");
    request.query = {{"uploadId", upload_id_}};
    request.body = {reinterpret_cast<const std::byte*>(xml.data()), xml.size()};
    absl::StatusOr<S3Response> response =
        ErrorInBody(client_->Send(request), absl::StrCat("S3 complete_multipart '", uri_, "'"));
    if (!response.ok()) return Fail(response.status());
    state_ = State::kClosed;
    upload_id_.clear();
    return absl::OkStatus();
  }

  void Abort() override {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    WaitForParts(0).IgnoreError();
    buffer_.clear();
    buffer_.shrink_to_fit();
    if (upload_id_.empty()) return;
    S3Request request = Base("abort_multipart", "DELETE");
    request.query = {{"uploadId", upload_id_}};
    client_->Send(request).IgnoreError();
    upload_id_.clear();
  }

 private:
  enum class State { kOpen, kSynced, kClosed };

  S3Request Base(const char* op, const char* method) const { return S3Request::For(op, method, bucket_, key_); }

  absl::Status Fail(absl::Status status) {
    Abort();
    return status;
  }

  absl::Status PutWhole() {
    S3Request request = Base("put", "PUT");
    request.body = buffer_;
    absl::StatusOr<S3Response> response = client_->Send(request);
    if (!response.ok()) return Fail(response.status());
    state_ = State::kClosed;
    buffer_.clear();
    return absl::OkStatus();
  }

  absl::Status StartUpload() {
    S3Request request = Base("create_multipart", "POST");
    request.query = {{"uploads", ""}};
    absl::StatusOr<S3Response> response = client_->Send(request);
    if (!response.ok()) return response.status();
    XMLDocument doc;
    doc.Parse(response->body.data(), response->body.size());
    upload_id_ = TextOf(doc.FirstChildElement("InitiateMultipartUploadResult"), "UploadId");
    if (upload_id_.empty()) return MalformedResponse("create_multipart", uri_);
    return absl::OkStatus();
  }

  // Starts uploading the buffer as the next part, keeping at most max_parts_in_flight running.
  absl::Status ShipPart() {
    if (upload_id_.empty()) {
      if (absl::Status s = StartUpload(); !s.ok()) return s;
    }
    if (absl::Status s = WaitForParts(client_->config().max_parts_in_flight - 1); !s.ok()) return s;
    const int number = ++parts_started_;
    auto part = std::make_shared<std::vector<std::byte>>(std::move(buffer_));
    buffer_ = std::vector<std::byte>();
    if (state_ == State::kOpen) buffer_.reserve(client_->config().part_size_bytes);
    // The part's thread only reads the writer's fixed fields; its ETag comes back by the future.
    in_flight_.push_back(std::async(std::launch::async, [this, number, part]() -> absl::StatusOr<std::string> {
      S3Request request = Base("upload_part", "PUT");
      request.query = {{"partNumber", absl::StrCat(number)}, {"uploadId", upload_id_}};
      request.body = *part;
      absl::StatusOr<S3Response> response = client_->Send(request);
      if (!response.ok()) return response.status();
      auto etag = response->headers.find("etag");
      if (etag == response->headers.end()) return MalformedResponse("upload_part (no ETag)", uri_);
      return etag->second;
    }));
    return absl::OkStatus();
  }

  // Collects finished parts in order until at most `at_most_running` remain.
  absl::Status WaitForParts(size_t at_most_running) {
    absl::Status first_error;
    while (in_flight_.size() > at_most_running) {
      absl::StatusOr<std::string> etag = in_flight_.front().get();
      in_flight_.pop_front();
      if (etag.ok()) {
        etags_.push_back(*std::move(etag));
      } else if (first_error.ok()) {
        first_error = etag.status();
      }
    }
    return first_error;
  }

  std::shared_ptr<S3Client> client_;
  std::string uri_;
  std::string bucket_;
  std::string key_;
  State state_ = State::kOpen;
  std::vector<std::byte> buffer_;
  uint64_t written_ = 0;
  std::string upload_id_;
  int parts_started_ = 0;
  std::vector<std::string> etags_;  // of the collected parts, by part number - 1
  std::deque<std::future<absl::StatusOr<std::string>>> in_flight_;
};

}  // namespace

absl::StatusOr<std::pair<std::string, std::string>> SplitS3Uri(absl::string_view uri) {
  if (!absl::StartsWith(uri, "s3://"))
    return absl::InvalidArgumentError(absl::StrCat("'", uri, "' is not an s3:// uri"));
  absl::string_view rest = uri.substr(5);
  const size_t slash = rest.find('/');
  std::string bucket(rest.substr(0, slash));
  if (bucket.empty()) return absl::InvalidArgumentError(absl::StrCat("'", uri, "' names no bucket"));
  std::string key = slash == absl::string_view::npos ? "" : std::string(rest.substr(slash + 1));
  return std::make_pair(std::move(bucket), std::move(key));
}

S3ObjectStore::S3ObjectStore(S3Config config, StoreObserver* observer)
    : client_(std::make_shared<S3Client>(std::move(config), observer)) {}

absl::StatusOr<uint64_t> S3ObjectStore::SizeOf(const std::string& uri) {
  auto parts = SplitS3Uri(uri);
  if (!parts.ok()) return parts.status();
  if (parts->second.empty()) return absl::NotFoundError(absl::StrCat("'", uri, "' is a bucket, not an object"));
  absl::StatusOr<S3Response> response = client_->Send(S3Request::For("head", "HEAD", parts->first, parts->second));
  if (!response.ok()) return response.status();
  uint64_t size = 0;
  auto length = response->headers.find("content-length");
  if (length == response->headers.end() || !absl::SimpleAtoi(length->second, &size)) {
    return MalformedResponse("head (no Content-Length)", uri);
  }
  return size;
}

absl::StatusOr<std::unique_ptr<RandomAccessObject>> S3ObjectStore::OpenForRead(const std::string& uri) {
  absl::StatusOr<uint64_t> size = SizeOf(uri);
  if (!size.ok()) return size.status();
  auto parts = SplitS3Uri(uri);
  return std::make_unique<S3Object>(client_, uri, parts->first, parts->second, *size);
}

namespace {

// An object taken over by a server-side copy: nothing is appended; Commit copies the source to the
// target inside S3 (CopyObject) and deletes the source, Abort deletes the source.
class S3CopyWriter final : public ObjectWriter {
 public:
  S3CopyWriter(std::shared_ptr<S3Client> client, std::string uri, std::pair<std::string, std::string> target,
               std::pair<std::string, std::string> source, uint64_t size)
      : client_(std::move(client)),
        uri_(std::move(uri)),
        target_(std::move(target)),
        source_(std::move(source)),
        size_(size) {}
  ~S3CopyWriter() override { Abort(); }

  const std::string& uri() const override { return uri_; }
  uint64_t bytes_written() const override { return size_; }
  absl::Status Append(std::span<const std::byte>) override {
    return absl::FailedPreconditionError("an adopted object takes no more bytes");
  }

  absl::Status Commit() override {
    if (closed_) return absl::FailedPreconditionError("writer is closed");
    S3Request copy = S3Request::For("copy", "PUT", target_.first, target_.second);
    copy.headers.push_back(
        absl::StrCat("x-amz-copy-source: /", source_.first, "/", S3Client::UriEncode(source_.second, true)));
    absl::StatusOr<S3Response> response = ErrorInBody(client_->Send(copy), absl::StrCat("S3 copy to '", uri_, "'"));
    if (!response.ok()) {
      Abort();
      return response.status();
    }
    closed_ = true;
    client_->Send(S3Request::For("delete", "DELETE", source_.first, source_.second)).IgnoreError();
    return absl::OkStatus();
  }

  void Abort() override {
    if (closed_) return;
    closed_ = true;
    client_->Send(S3Request::For("delete", "DELETE", source_.first, source_.second)).IgnoreError();
  }

 private:
  std::shared_ptr<S3Client> client_;
  std::string uri_;
  std::pair<std::string, std::string> target_, source_;  // bucket, key
  uint64_t size_;
  bool closed_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ObjectWriter>> S3ObjectStore::AdoptForWrite(const std::string& source_uri,
                                                                           const std::string& uri) {
  auto source = SplitS3Uri(source_uri);
  auto target = SplitS3Uri(uri);
  if (!source.ok()) return source.status();
  if (!target.ok()) return target.status();
  if (source->second.empty() || target->second.empty())
    return absl::InvalidArgumentError(absl::StrCat("'", uri, "' or '", source_uri, "' names no key"));
  absl::StatusOr<uint64_t> size = SizeOf(source_uri);
  if (!size.ok()) return size.status();
  // One CopyObject takes at most 5 GiB; larger objects are copied through the writer instead.
  if (*size > (uint64_t{5} << 30)) return absl::UnimplementedError("objects over 5 GiB are not copied in place");
  return std::make_unique<S3CopyWriter>(client_, uri, *std::move(target), *std::move(source), *size);
}

absl::StatusOr<std::unique_ptr<ObjectWriter>> S3ObjectStore::OpenForWrite(const std::string& uri) {
  auto parts = SplitS3Uri(uri);
  if (!parts.ok()) return parts.status();
  if (parts->second.empty()) return absl::InvalidArgumentError(absl::StrCat("'", uri, "' names no key"));
  return std::make_unique<S3Writer>(client_, uri, parts->first, parts->second);
}

absl::StatusOr<std::vector<ObjectEntry>> S3ObjectStore::List(const std::string& prefix_uri) {
  auto parts = SplitS3Uri(prefix_uri);
  if (!parts.ok()) return parts.status();
  const std::string prefix = parts->second.empty() ? "" : absl::StrCat(parts->second, "/");
  std::vector<ObjectEntry> entries;
  std::string token;
  // Bounded: a listing of more than 10 million keys is refused rather than looped on.
  for (int page = 0; page < 10'000; ++page) {
    S3Request request = S3Request::For("list", "GET", parts->first, "");
    request.query = {
        {"list-type", "2"}, {"prefix", prefix}, {"max-keys", absl::StrCat(client_->config().list_page_size)}};
    if (!token.empty()) request.query.emplace_back("continuation-token", token);
    absl::StatusOr<S3Response> response = client_->Send(request);
    if (!response.ok()) return response.status();
    XMLDocument doc;
    if (doc.Parse(response->body.data(), response->body.size()) != tinyxml2::XML_SUCCESS) {
      return MalformedResponse("list", prefix_uri);
    }
    const XMLElement* result = doc.FirstChildElement("ListBucketResult");
    if (result == nullptr) return MalformedResponse("list", prefix_uri);
    for (const XMLElement* item = result->FirstChildElement("Contents"); item != nullptr;
         item = item->NextSiblingElement("Contents")) {
      ObjectEntry entry;
      const std::string key = TextOf(item, "Key");
      if (!absl::StartsWith(key, prefix) || key.size() == prefix.size()) continue;
      entry.relative_name = key.substr(prefix.size());
      entry.uri = absl::StrCat("s3://", parts->first, "/", key);
      absl::SimpleAtoi(TextOf(item, "Size"), &entry.size_bytes);
      entries.push_back(std::move(entry));
    }
    if (TextOf(result, "IsTruncated") != "true") {
      std::sort(entries.begin(), entries.end(),
                [](const ObjectEntry& a, const ObjectEntry& b) { return a.relative_name < b.relative_name; });
      return entries;
    }
    token = TextOf(result, "NextContinuationToken");
    if (token.empty()) return MalformedResponse("list (truncated without a continuation token)", prefix_uri);
  }
  return MakeError(absl::StatusCode::kResourceExhausted, "LISTING_TOO_LARGE",
                   absl::StrCat("'", prefix_uri, "' lists more than 10,000 pages"));
}

absl::Status S3ObjectStore::Delete(const std::string& uri) {
  auto parts = SplitS3Uri(uri);
  if (!parts.ok()) return parts.status();
  absl::StatusOr<S3Response> response = client_->Send(S3Request::For("delete", "DELETE", parts->first, parts->second));
  if (!response.ok() && !absl::IsNotFound(response.status())) return response.status();
  return absl::OkStatus();
}

}  // namespace modelsmith
