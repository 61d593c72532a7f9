// S3ObjectStore: ObjectStore on an S3-compatible service. URIs are "s3://bucket/key".
//
// Reading: HEAD for the size, then ranged GETs; small reads fetch `read_ahead_bytes` and serve
// the following small reads from that window, so a header costs one request and a model is
// never downloaded whole.
// Writing: bytes are buffered into parts of `part_size_bytes`; an object that fits one part is
// a single PUT at Commit, anything larger a multipart upload with at most `max_parts_in_flight`
// parts uploading at once (memory per writer: about (in flight + 1) parts). Sync uploads the
// last part, so a synced writer holds no data; Commit completes the upload. Abort, failure and
// destruction abort the multipart upload, so no parts are left behind by a running process.
// Listing: ListObjectsV2 with continuation tokens.
#ifndef MODELSMITH_WORKERS_STORAGE_S3_OBJECT_STORE_H_
#define MODELSMITH_WORKERS_STORAGE_S3_OBJECT_STORE_H_

#include <memory>

#include "workers/storage/object_store.h"
#include "workers/storage/s3_client.h"

namespace modelsmith {

class S3ObjectStore final : public ObjectStore {
 public:
  // `observer` may be null.
  S3ObjectStore(S3Config config, StoreObserver* observer);

  absl::StatusOr<uint64_t> SizeOf(const std::string& uri) override;
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> OpenForRead(const std::string& uri) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenForWrite(const std::string& uri) override;
  // A server-side CopyObject at Commit, then the source deleted (UNIMPLEMENTED over 5 GiB, the
  // limit of one copy: the caller copies through a writer).
  absl::StatusOr<std::unique_ptr<ObjectWriter>> AdoptForWrite(const std::string& source_uri,
                                                              const std::string& uri) override;
  absl::StatusOr<std::vector<ObjectEntry>> List(const std::string& prefix_uri) override;
  absl::Status Delete(const std::string& uri) override;
  // Multipart uploads are invisible until complete: there are no staging objects.
  bool IsStagingName(const std::string& relative_name) const override { return false; }

 private:
  std::shared_ptr<S3Client> client_;
};

// Splits "s3://bucket/key" into bucket and key. INVALID_ARGUMENT when there is no bucket.
absl::StatusOr<std::pair<std::string, std::string>> SplitS3Uri(absl::string_view uri);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_S3_OBJECT_STORE_H_
