// URI helpers shared by every store: a plain path, file:///path, or s3://bucket/key.
#ifndef MODELSMITH_WORKERS_STORAGE_URI_H_
#define MODELSMITH_WORKERS_STORAGE_URI_H_

#include "absl/strings/string_view.h"
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace modelsmith {

enum class UriScheme { kLocal, kS3 };

struct ParsedUri {
  UriScheme scheme = UriScheme::kLocal;
  // kLocal: an absolute, lexically normalised path ("." and ".." resolved, no trailing '/').
  // kS3: "bucket/key" without the scheme.
  std::string path;
  std::string ToString() const;  // the canonical form: the path, or "s3://bucket/key"
};

// Parses `uri`. Relative local paths are made absolute against the current directory.
// INVALID_ARGUMENT for an empty uri, an unknown scheme, or a file:// uri with a host.
absl::StatusOr<ParsedUri> ParseUri(absl::string_view uri);

// Lexically normalises an absolute path: collapses "//", resolves "." and ".." (never above
// "/"), removes the trailing '/'.
std::string NormalizePath(absl::string_view absolute_path);

// "dir" + "name" with exactly one '/' between; works for paths and s3:// uris.
std::string JoinUri(absl::string_view prefix, absl::string_view name);

// The last '/'-separated component.
absl::string_view BaseName(absl::string_view uri);

// Everything before the last '/'.
absl::string_view ParentUri(absl::string_view uri);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_URI_H_
