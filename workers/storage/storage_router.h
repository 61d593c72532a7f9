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
  // `local_roots`: directories (created if missing) under which local paths are allowed; empty
  // allows every path (the in-process `modelsmith run`, where the caller owns the machine).
  // `s3`: the store for s3:// uris, or null when S3 is not configured.
  explicit StorageRouter(std::vector<std::string> local_roots, std::unique_ptr<ObjectStore> s3 = nullptr);

  // Parses and canonicalises `uri` and picks its store.
  // INVALID_ARGUMENT for a malformed uri; PERMISSION_DENIED (reason PATH_OUTSIDE_ROOTS) for a
  // local path that resolves, symlinks included, outside every root; UNIMPLEMENTED (reason
  // STORE_NOT_CONFIGURED) for s3:// until an S3 store is configured.
  absl::StatusOr<Location> Resolve(absl::string_view uri) const;

  const std::vector<std::string>& local_roots() const { return roots_; }

 private:
  std::vector<std::string> roots_;  // real paths
  std::unique_ptr<ObjectStore> local_;
  std::unique_ptr<ObjectStore> s3_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_STORAGE_ROUTER_H_
