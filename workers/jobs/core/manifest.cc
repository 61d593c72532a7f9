#include "workers/jobs/core/manifest.h"

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/util/json_util.h"
#include "workers/jobs/core/version.h"
#include "workers/storage/checksum.h"
#include "workers/storage/uri.h"

namespace modelsmith {

using nlohmann::ordered_json;

std::string ArtifactName(absl::string_view directory, absl::string_view uri) {
  if (!directory.empty() && uri.size() > directory.size() + 1 && absl::StartsWith(uri, directory) &&
      uri[directory.size()] == '/')
    return std::string(uri.substr(directory.size() + 1));
  return std::string(BaseName(uri));
}

bool SafeArtifactName(absl::string_view name) {
  if (name.empty() || name.front() == '/' || name.find('\\') != absl::string_view::npos) return false;
  for (absl::string_view segment : absl::StrSplit(name, '/')) {
    if (segment.empty() || segment == "." || segment == "..") return false;
  }
  return true;
}

absl::StatusOr<v1::Artifact> WriteManifestTo(ObjectStore& store, const std::string& uri, ordered_json manifest,
                                             const std::vector<v1::Artifact>& artifacts) {
  ordered_json list = ordered_json::array();
  for (const v1::Artifact& artifact : artifacts) {
    list.push_back({{"name", ArtifactName(ParentUri(uri), artifact.uri())},
                    {"uri", artifact.uri()},
                    {"role", artifact.role()},
                    {"size_bytes", artifact.size_bytes()},
                    {"sha256", artifact.sha256()}});
  }
  manifest["artifacts"] = std::move(list);
  const std::string text = manifest.dump(2) + "\n";
  absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = store.OpenForWrite(uri);
  if (!writer.ok()) return writer.status();
  if (absl::Status s = (*writer)->Append({reinterpret_cast<const std::byte*>(text.data()), text.size()}); !s.ok()) {
    (*writer)->Abort();
    return s;
  }
  if (absl::Status s = (*writer)->Commit(); !s.ok()) return s;
  v1::Artifact artifact;
  artifact.set_uri(uri);
  artifact.set_size_bytes(text.size());
  artifact.set_sha256(Sha256Hex(text));
  artifact.set_role("manifest");
  return artifact;
}

ordered_json ManifestHeader(const JobRun& run, absl::string_view kind) {
  ordered_json manifest;
  manifest["modelsmith_version"] = kModelsmithVersion;
  manifest["git_revision"] = kModelsmithGitRevision;
  manifest["job_id"] = run.job_id;
  if (!run.owner.empty()) manifest["owner"] = run.owner;
  manifest["kind"] = std::string(kind);
  manifest["spec"] = MessageJson(run.spec);
  return manifest;
}

ordered_json ManifestHeader(const JobRun& run, absl::string_view kind, const ModelView& input) {
  ordered_json manifest = ManifestHeader(run, kind);
  manifest["input"] = {{"uri", input.uri},
                       {"format", input.format},
                       {"tensors", input.tensors.size()},
                       {"tensor_bytes", input.tensor_bytes}};
  return manifest;
}

ordered_json MessageJson(const google::protobuf::Message& message) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  return ordered_json::parse(text, nullptr, false);
}

}  // namespace modelsmith
