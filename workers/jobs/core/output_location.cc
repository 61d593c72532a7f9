#include "workers/jobs/core/output_location.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "workers/common/error.h"
#include "workers/jobs/core/version.h"
#include "workers/storage/checksum.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

absl::StatusOr<Location> ResolveOutput(const StorageRouter& router, absl::string_view output_uri,
                                       absl::string_view field) {
  if (output_uri.empty()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "MISSING_FIELD",
                     absl::StrCat("'", field, "' is required"), {{"field", std::string(field)}});
  }
  absl::StatusOr<Location> location = router.Resolve(output_uri);
  if (!location.ok()) return WithReason(location.status(), ReasonOf(location.status()), {{"field", std::string(field)}});
  if (absl::StatusOr<uint64_t> size = location->store->SizeOf(location->uri); size.ok()) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "OUTPUT_IS_FILE",
                     absl::StrCat("output '", location->uri,
                                  "' is an existing file; the output is a directory (prefix)"),
                     {{"field", std::string(field)}});
  }
  return location;
}

// Names listed by an existing manifest's "artifacts" (relative to the location).
std::vector<std::string> ManifestArtifactNames(ObjectStore& store, const std::string& manifest_uri) {
  std::vector<std::string> names;
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(manifest_uri);
  if (!object.ok() || (*object)->size_bytes() > (64 << 20)) return names;
  std::string text((*object)->size_bytes(), '\0');
  if (!(*object)->ReadAt(0, text.size(), reinterpret_cast<std::byte*>(text.data())).ok()) return names;
  json manifest = json::parse(text, nullptr, false);
  if (!manifest.is_object() || !manifest.contains("artifacts") || !manifest["artifacts"].is_array()) {
    return names;
  }
  for (const json& artifact : manifest["artifacts"]) {
    if (!artifact.is_object() || !artifact.contains("name") || !artifact["name"].is_string()) continue;
    std::string name = artifact["name"].get<std::string>();
    // Only plain names: a hostile manifest must not make us delete outside the location.
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") continue;
    names.push_back(std::move(name));
  }
  return names;
}

}  // namespace

absl::Status CheckOutputVacant(const StorageRouter& router, absl::string_view output_uri,
                               bool overwrite, absl::string_view field) {
  absl::StatusOr<Location> location = ResolveOutput(router, output_uri, field);
  if (!location.ok()) return location.status();
  if (overwrite) return absl::OkStatus();
  absl::StatusOr<std::vector<ObjectEntry>> entries = location->store->List(location->uri);
  if (!entries.ok()) return entries.status();
  for (const ObjectEntry& entry : *entries) {
    if (location->store->IsStagingName(entry.relative_name)) continue;
    return MakeError(absl::StatusCode::kFailedPrecondition, "OUTPUT_NOT_EMPTY",
                     absl::StrCat("output '", location->uri, "' already holds files (e.g. '",
                                  entry.relative_name, "'); set overwrite to replace them"),
                     {{"field", std::string(field)}});
  }
  return absl::OkStatus();
}

absl::StatusOr<OutputLocation> OutputLocation::Prepare(const StorageRouter& router,
                                                       absl::string_view output_uri, bool overwrite,
                                                       uint32_t attempt, absl::string_view field) {
  if (absl::Status s = CheckOutputVacant(router, output_uri, overwrite || attempt > 1, field);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<Location> location = ResolveOutput(router, output_uri, field);
  if (!location.ok()) return location.status();
  OutputLocation output(*std::move(location));
  ObjectStore& store = output.store();
  absl::StatusOr<std::vector<ObjectEntry>> entries = store.List(output.uri());
  if (!entries.ok()) return entries.status();
  for (const ObjectEntry& entry : *entries) {
    if (store.IsStagingName(entry.relative_name)) {
      if (absl::Status s = store.Delete(entry.uri); !s.ok()) return s;
    }
  }
  const std::string manifest_uri = output.UriOf(kManifestName);
  if (store.SizeOf(manifest_uri).ok()) {
    output.replaced_names_ = ManifestArtifactNames(store, manifest_uri);
    if (absl::Status s = store.Delete(manifest_uri); !s.ok()) return s;
  }
  return output;
}

std::string OutputLocation::UriOf(absl::string_view name) const { return JoinUri(uri(), name); }

absl::Status OutputLocation::RemoveReplaced(const std::set<std::string>& kept_names) {
  for (const std::string& name : replaced_names_) {
    if (kept_names.contains(name) || name == kManifestName) continue;
    if (absl::Status s = store().Delete(UriOf(name)); !s.ok()) return s;
  }
  replaced_names_.clear();
  return absl::OkStatus();
}

void OutputLocation::Discard(const std::vector<std::string>& names) {
  for (const std::string& name : names) store().Delete(UriOf(name)).IgnoreError();
}

absl::StatusOr<v1::Artifact> OutputLocation::WriteManifest(ordered_json manifest,
                                                           const std::vector<v1::Artifact>& artifacts) {
  return WriteManifestTo(store(), UriOf(kManifestName), std::move(manifest), artifacts);
}

absl::Status OutputLocation::Complete(ordered_json manifest, const std::vector<v1::Artifact>& artifacts,
                                      const std::vector<std::string>& committed_names, v1::JobResult& result) {
  absl::StatusOr<v1::Artifact> manifest_artifact = WriteManifest(std::move(manifest), artifacts);
  if (!manifest_artifact.ok()) {
    Discard(committed_names);
    return manifest_artifact.status();
  }
  std::set<std::string> kept(committed_names.begin(), committed_names.end());
  kept.insert(std::string(kManifestName));
  RemoveReplaced(kept).IgnoreError();
  uint64_t written = manifest_artifact->size_bytes();
  for (const v1::Artifact& a : artifacts) written += a.size_bytes();
  result.mutable_figures()->set_bytes_written(written);
  *result.add_artifacts() = *manifest_artifact;
  return absl::OkStatus();
}

absl::StatusOr<v1::Artifact> WriteSmallObject(ObjectStore& store, const std::string& uri, const std::string& text,
                                              absl::string_view role) {
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
  artifact.set_role(std::string(role));
  return artifact;
}

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
  return WriteSmallObject(store, uri, manifest.dump(2) + "\n", "manifest");
}

ordered_json ManifestHeader(const JobRun& run, absl::string_view kind, const ModelView& input) {
  ordered_json manifest;
  manifest["modelsmith_version"] = kModelsmithVersion;
  manifest["git_revision"] = kModelsmithGitRevision;
  manifest["job_id"] = run.job_id;
  manifest["kind"] = std::string(kind);
  manifest["spec"] = MessageJson(run.spec);
  manifest["input"] = {{"uri", input.uri}, {"format", input.format},
                       {"tensors", input.tensors.size()}, {"tensor_bytes", input.tensor_bytes}};
  return manifest;
}

ordered_json MessageJson(const google::protobuf::Message& message) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  return ordered_json::parse(text, nullptr, false);
}

absl::Status OutputFile::CheckVacant(const StorageRouter& router, absl::string_view output_uri, bool overwrite,
                                     absl::string_view field) {
  if (output_uri.empty()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "MISSING_FIELD", absl::StrCat("'", field, "' is required"),
                     {{"field", std::string(field)}});
  }
  absl::StatusOr<Location> location = router.Resolve(output_uri);
  if (!location.ok()) return WithReason(location.status(), ReasonOf(location.status()), {{"field", std::string(field)}});
  if (overwrite) return absl::OkStatus();
  for (const std::string& uri : {location->uri, location->uri + ".manifest.json"}) {
    if (location->store->SizeOf(uri).ok()) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "OUTPUT_EXISTS",
                       absl::StrCat("output '", uri, "' already exists; set overwrite to replace it"),
                       {{"field", std::string(field)}});
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<OutputFile> OutputFile::Prepare(const StorageRouter& router, absl::string_view output_uri, bool overwrite,
                                               uint32_t attempt, absl::string_view field) {
  if (absl::Status s = CheckVacant(router, output_uri, overwrite || attempt > 1, field); !s.ok()) return s;
  absl::StatusOr<Location> location = router.Resolve(output_uri);
  if (!location.ok()) return location.status();
  OutputFile output(*std::move(location));
  ObjectStore& store = output.store();
  const std::string dir(ParentUri(output.uri()));
  const std::string staging_prefix = absl::StrCat(".", BaseName(output.uri()), ".");
  absl::StatusOr<std::vector<ObjectEntry>> entries = store.List(dir);
  if (!entries.ok()) return entries.status();
  for (const ObjectEntry& entry : *entries) {
    if (store.IsStagingName(entry.relative_name) && absl::StartsWith(entry.relative_name, staging_prefix)) {
      if (absl::Status s = store.Delete(entry.uri); !s.ok()) return s;
    }
  }
  if (absl::Status s = store.Delete(output.manifest_uri()); !s.ok()) return s;
  return output;
}

}  // namespace modelsmith
