// StorageRouter: turns a job's URI into the store that holds it, and enforces the server's
// roots, the only places jobs may read or write.
#ifndef MODELSMITH_WORKERS_STORAGE_STORAGE_ROUTER_H_
#define MODELSMITH_WORKERS_STORAGE_STORAGE_ROUTER_H_

#include "absl/strings/string_view.h"
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

struct Location {
  ObjectStore* store = nullptr;  // owned by the router
  std::string uri;               // canonical: a normalised absolute path or s3://bucket/key
};

class StorageRouter {
 public:
  // `roots`: directories (created if missing) under which local paths are allowed, and
  // "s3://bucket" or "s3://bucket/prefix" entries under which s3:// uris are; with roots but no
  // S3 root, no bucket is reachable. No roots at all allows every path and bucket (the in-process
  // `modelsmith run`, where the caller owns the machine and the credentials).
  // `s3`: the store for s3:// uris, or null when S3 is not configured.
  explicit StorageRouter(std::vector<std::string> roots, std::unique_ptr<ObjectStore> s3 = nullptr);

  // Parses and canonicalises `uri` and picks its store.
  // INVALID_ARGUMENT for a malformed uri (an s3:// key with a '.', '..' or empty segment
  // included); PERMISSION_DENIED (reason PATH_OUTSIDE_ROOTS) for a local path that resolves,
  // symlinks included, outside every root, or an s3:// uri outside every S3 root;
  // FAILED_PRECONDITION (reason S3_NOT_CONFIGURED) for s3:// until an S3 store is configured.
  absl::StatusOr<Location> Resolve(absl::string_view uri) const;

  const std::vector<std::string>& local_roots() const { return roots_; }
  // "bucket" or "bucket/prefix", without the scheme.
  const std::vector<std::string>& s3_roots() const { return s3_roots_; }

 private:
  std::vector<std::string> roots_;     // real paths
  std::vector<std::string> s3_roots_;  // "bucket" or "bucket/prefix"
  bool confined_ = false;              // any root was given
  std::unique_ptr<ObjectStore> local_;
  std::unique_ptr<ObjectStore> s3_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_STORAGE_ROUTER_H_
