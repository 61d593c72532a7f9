// LocalObjectStore: ObjectStore on a POSIX filesystem. URIs are absolute paths.
//
// Writers stage into "<dir>/.<name>.modelsmith-<random>.tmp" beside the target, fsync the file,
// rename it over the target and fsync the directory on Commit, so a reader sees the old object
// or the whole new one, never a part. AppendFrom between local files uses copy_file_range.
#ifndef MODELSMITH_WORKERS_STORAGE_LOCAL_OBJECT_STORE_H_
#define MODELSMITH_WORKERS_STORAGE_LOCAL_OBJECT_STORE_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "workers/storage/object_store.h"

namespace modelsmith {

class LocalObjectStore final : public ObjectStore {
 public:
  // Unconfined: any path the process can reach.
  LocalObjectStore() = default;
  // Confined to `roots` (real paths of existing directories): every read (OpenForRead, SizeOf)
  // resolves beneath the root that holds the path with the kernel's help, openat2 with
  // RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS on the root's directory descriptor. A symlink inside a
  // root that points outside it, or one swapped in after a check, is PERMISSION_DENIED
  // (PATH_OUTSIDE_ROOTS); one that stays inside is followed. Paths derived from file contents
  // (index shard names, side files, external data) are opened the same way. Writes too: the
  // output's directories are made one by one inside descriptors opened beneath the root, the
  // staging file is created, renamed and removed through its directory's descriptor, and List and
  // Delete open their directory beneath the root first.
  explicit LocalObjectStore(const std::vector<std::string>& roots);
  ~LocalObjectStore() override;

  absl::StatusOr<uint64_t> SizeOf(const std::string& uri) override;
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> OpenForRead(const std::string& uri) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenForWrite(const std::string& uri) override;
  // A rename within the roots (the object's bytes never move).
  absl::StatusOr<std::unique_ptr<ObjectWriter>> AdoptForWrite(const std::string& source_uri,
                                                              const std::string& uri) override;
  absl::StatusOr<std::vector<ObjectEntry>> List(const std::string& prefix_uri) override;
  absl::Status Delete(const std::string& uri) override;
  bool IsStagingName(const std::string& relative_name) const override;
  // Walks the directories beneath the prefix's descriptor without following symlinks; a
  // directory that is not empty stays.
  void RemoveEmptyDirectories(const std::string& prefix_uri) override;

 private:
  // An fd of `uri` opened beneath its root with `flags` (O_PATH for a stat), or the plain open
  // when unconfined.
  absl::StatusOr<int> OpenConfined(const std::string& uri, int flags) const;
  // The directory `dir` (O_RDONLY), made with its missing parents beneath its root.
  absl::StatusOr<int> MakeDirectories(const std::string& dir) const;

  struct Beneath {
    const std::string* root;
    int root_fd;
    std::string relative;  // "." for the root itself
  };
  // The innermost root that holds `uri`; nullopt when none does.
  std::optional<Beneath> Locate(const std::string& uri) const;
  absl::StatusOr<int> OpenBeneath(const Beneath& at, const std::string& uri, int flags) const;

  std::vector<std::pair<std::string, int>> roots_;  // real path, O_PATH directory fd
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_LOCAL_OBJECT_STORE_H_
