#include "workers/storage/uri.h"

#include <unistd.h>

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace modelsmith {

std::string ParsedUri::ToString() const { return scheme == UriScheme::kS3 ? absl::StrCat("s3://", path) : path; }

std::string NormalizePath(absl::string_view absolute_path) {
  std::vector<absl::string_view> parts;
  for (absl::string_view part : absl::StrSplit(absolute_path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  return absl::StrCat("/", absl::StrJoin(parts, "/"));
}

absl::StatusOr<ParsedUri> ParseUri(absl::string_view uri) {
  if (uri.empty()) return absl::InvalidArgumentError("empty uri");
  ParsedUri parsed;
  if (absl::StartsWith(uri, "s3://")) {
    absl::string_view rest = uri.substr(5);
    if (rest.empty() || rest.front() == '/') {
      return absl::InvalidArgumentError(absl::StrCat("uri '", uri, "' names no bucket"));
    }
    while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    // A key is a name, not a path: "s3://a/../b/key" must never reach bucket b, nor "." or an
    // empty segment mean anything a reader of the uri would not expect.
    for (absl::string_view segment : absl::StrSplit(rest, '/')) {
      if (segment == ".." || segment == "." || segment.empty()) {
        return absl::InvalidArgumentError(absl::StrCat("uri '", uri, "' has a '", segment,
                                                       "' segment; s3:// keys take no '.', '..' or empty segments"));
      }
    }
    parsed.scheme = UriScheme::kS3;
    parsed.path = std::string(rest);
    return parsed;
  }
  absl::string_view path = uri;
  if (absl::StartsWith(uri, "file://")) {
    path = uri.substr(7);
    if (path.empty() || path.front() != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("uri '", uri, "': file:// uris take an absolute path and no host"));
    }
  } else if (size_t colon = uri.find("://"); colon != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("uri '", uri, "' has an unsupported scheme '", uri.substr(0, colon),
                                                   "' (supported: a path, file://, s3://)"));
  }
  if (path.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError("uri contains a NUL byte");
  }
  if (path.front() == '/') {
    parsed.path = NormalizePath(path);
  } else {
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd) == nullptr) {
      return absl::InternalError("cannot read the current directory");
    }
    parsed.path = NormalizePath(absl::StrCat(cwd, "/", path));
  }
  return parsed;
}

std::string JoinUri(absl::string_view prefix, absl::string_view name) {
  while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
  while (!name.empty() && name.front() == '/') name.remove_prefix(1);
  return absl::StrCat(prefix, "/", name);
}

absl::string_view BaseName(absl::string_view uri) {
  size_t slash = uri.rfind('/');
  return slash == absl::string_view::npos ? uri : uri.substr(slash + 1);
}

absl::string_view ParentUri(absl::string_view uri) {
  size_t slash = uri.rfind('/');
  if (slash == absl::string_view::npos) return "";
  if (slash == 0) return "/";
  return uri.substr(0, slash);
}

}  // namespace modelsmith
