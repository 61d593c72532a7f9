#include "workers/jobs/core/manifest.h"

#include "google/protobuf/util/json_util.h"
#include "workers/jobs/core/version.h"
#include "workers/storage/checksum.h"
#include "workers/storage/uri.h"

namespace modelsmith {

using nlohmann::ordered_json;

absl::StatusOr<v1::Artifact> WriteManifestTo(ObjectStore& store, const std::string& uri, ordered_json manifest,
                                             const std::vector<v1::Artifact>& artifacts) {
  ordered_json list = ordered_json::array();
  for (const v1::Artifact& artifact : artifacts) {
    list.push_back({{"name", std::string(BaseName(artifact.uri()))},
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
