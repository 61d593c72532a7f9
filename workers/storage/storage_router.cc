#include "workers/storage/storage_router.h"

#include <climits>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "workers/common/error.h"
#include "workers/storage/local_object_store.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

// The real path of `path`: symlinks of the longest existing ancestor resolved, the rest
// appended (a path being created has no real path yet).
std::string RealPathOfExistingAncestor(const std::string& path) {
  std::string existing = path;
  std::string rest;
  while (true) {
    char resolved[PATH_MAX];
    if (realpath(existing.c_str(), resolved) != nullptr) {
      return rest.empty() ? std::string(resolved) : JoinUri(resolved, rest);
    }
    if (existing == "/") return path;
    std::string base(BaseName(existing));
    rest = rest.empty() ? base : absl::StrCat(base, "/", rest);
    existing = std::string(ParentUri(existing));
  }
}

bool IsUnder(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root || absl::StartsWith(path, absl::StrCat(root, "/"));
}

}  // namespace

StorageRouter::StorageRouter(std::vector<std::string> roots, std::unique_ptr<ObjectStore> s3) : s3_(std::move(s3)) {
  confined_ = !roots.empty();
  for (const std::string& root : roots) {
    absl::StatusOr<ParsedUri> parsed = ParseUri(root);
    if (!parsed.ok()) continue;
    if (parsed->scheme == UriScheme::kS3) {
      s3_roots_.push_back(parsed->path);
      continue;
    }
    std::error_code ec;
    std::filesystem::create_directories(parsed->path, ec);
    roots_.push_back(RealPathOfExistingAncestor(parsed->path));
  }
  // The store enforces the roots again at every open, beneath each root's directory: paths that
  // jobs derive from file contents never pass through Resolve.
  local_ = confined_ ? std::make_unique<LocalObjectStore>(roots_) : std::make_unique<LocalObjectStore>();
}

absl::StatusOr<Location> StorageRouter::Resolve(absl::string_view uri) const {
  absl::StatusOr<ParsedUri> parsed = ParseUri(uri);
  if (!parsed.ok()) return WithReason(parsed.status(), "INVALID_URI", {{"uri", std::string(uri)}});
  if (parsed->scheme == UriScheme::kS3) {
    if (s3_ == nullptr) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "S3_NOT_CONFIGURED",
                       absl::StrCat("'", uri,
                                    "': S3 is not configured here (set AWS_ACCESS_KEY_ID and "
                                    "AWS_SECRET_ACCESS_KEY, and AWS_ENDPOINT_URL for a non-AWS store)"),
                       {{"uri", std::string(uri)}});
    }
    if (confined_) {
      bool allowed = false;
      for (const std::string& root : s3_roots_) allowed = allowed || IsUnder(parsed->path, root);
      if (!allowed) {
        return MakeError(absl::StatusCode::kPermissionDenied, "PATH_OUTSIDE_ROOTS",
                         s3_roots_.empty()
                             ? absl::StrCat("'", uri, "': no S3 root is configured (--roots s3://bucket[/prefix])")
                             : absl::StrCat("'", uri, "' is outside the server's S3 roots (s3://",
                                            absl::StrJoin(s3_roots_, ", s3://"), ")"),
                         {{"uri", std::string(uri)}});
      }
    }
    return Location{s3_.get(), parsed->ToString()};
  }
  if (confined_) {
    std::string real = RealPathOfExistingAncestor(parsed->path);
    bool allowed = false;
    for (const std::string& root : roots_) allowed = allowed || IsUnder(real, root);
    if (!allowed) {
      return MakeError(absl::StatusCode::kPermissionDenied, "PATH_OUTSIDE_ROOTS",
                       absl::StrCat("'", uri, "' resolves to '", real, "', outside the server's roots (",
                                    absl::StrJoin(roots_, ", "), ")"),
                       {{"uri", std::string(uri)}});
    }
  }
  return Location{local_.get(), parsed->path};
}

}  // namespace modelsmith
