// LocalObjectStore: ObjectStore on a POSIX filesystem. URIs are absolute paths.
//
// Writers stage into "<dir>/.<name>.modelsmith-<random>.tmp" beside the target, fsync the file,
// rename it over the target and fsync the directory on Commit, so a reader sees the old object
// or the whole new one, never a part. AppendFrom between local files uses copy_file_range.
#ifndef MODELSMITH_WORKERS_STORAGE_LOCAL_OBJECT_STORE_H_
#define MODELSMITH_WORKERS_STORAGE_LOCAL_OBJECT_STORE_H_

#include "workers/storage/object_store.h"

namespace modelsmith {

class LocalObjectStore final : public ObjectStore {
 public:
  absl::StatusOr<uint64_t> SizeOf(const std::string& uri) override;
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> OpenForRead(const std::string& uri) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenForWrite(const std::string& uri) override;
  absl::StatusOr<std::vector<ObjectEntry>> List(const std::string& prefix_uri) override;
  absl::Status Delete(const std::string& uri) override;
  bool IsStagingName(const std::string& relative_name) const override;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_LOCAL_OBJECT_STORE_H_
