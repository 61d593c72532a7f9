#include "workers/jobs/core/publication.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/storage/checksum.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::json;

constexpr uint64_t kQueuedWriteBytes = 32 << 20;

absl::StatusOr<Location> ResolveField(const StorageRouter& router, absl::string_view uri, absl::string_view field) {
  if (uri.empty()) return FieldError("MISSING_FIELD", field, absl::StrCat("'", field, "' is required"));
  absl::StatusOr<Location> location = router.Resolve(uri);
  if (!location.ok())
    return WithReason(location.status(), ReasonOf(location.status()), {{"field", std::string(field)}});
  return location;
}

absl::StatusOr<Location> ResolveDirectory(const StorageRouter& router, absl::string_view output_uri,
                                          absl::string_view field) {
  absl::StatusOr<Location> location = ResolveField(router, output_uri, field);
  if (!location.ok()) return location.status();
  if (absl::StatusOr<uint64_t> size = location->store->SizeOf(location->uri); size.ok()) {
    return MakeError(
        absl::StatusCode::kFailedPrecondition, "OUTPUT_IS_FILE",
        absl::StrCat("output '", location->uri, "' is an existing file; the output is a directory (prefix)"),
        {{"field", std::string(field)}});
  }
  return location;
}

// Names listed by an existing manifest's "artifacts" (relative to its directory).
std::vector<std::string> ManifestArtifactNames(ObjectStore& store, const std::string& manifest_uri) {
  std::vector<std::string> names;
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(manifest_uri);
  if (!object.ok() || (*object)->size_bytes() > (64 << 20)) return names;
  std::string text((*object)->size_bytes(), '\0');
  if (!(*object)->ReadAt(0, text.size(), reinterpret_cast<std::byte*>(text.data())).ok()) return names;
  json manifest = json::parse(text, nullptr, false);
  if (!manifest.is_object() || !manifest.contains("artifacts") || !manifest["artifacts"].is_array()) return names;
  for (const json& artifact : manifest["artifacts"]) {
    if (!artifact.is_object() || !artifact.contains("name") || !artifact["name"].is_string()) continue;
    std::string name = artifact["name"].get<std::string>();
    // Only names below the location: a hostile manifest must not make us delete outside it.
    if (!SafeArtifactName(name)) continue;
    names.push_back(std::move(name));
  }
  return names;
}

// Deletes the staging leftovers in `directory` whose names start with `prefix` (any when empty).
absl::Status RemoveStagingLeftovers(ObjectStore& store, const std::string& directory, absl::string_view prefix) {
  absl::StatusOr<std::vector<ObjectEntry>> entries = store.List(directory);
  if (!entries.ok()) return entries.status();
  for (const ObjectEntry& entry : *entries) {
    if (store.IsStagingName(entry.relative_name) && absl::StartsWith(entry.relative_name, prefix)) {
      if (absl::Status s = store.Delete(entry.uri); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status FileVacant(const Location& location, absl::string_view field) {
  for (const std::string& uri : {location.uri, location.uri + ".manifest.json"}) {
    if (location.store->SizeOf(uri).ok()) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "OUTPUT_EXISTS",
                       absl::StrCat("output '", uri, "' already exists; set overwrite to replace it"),
                       {{"field", std::string(field)}});
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Publication::CheckDirectoryVacant(const StorageRouter& router, absl::string_view output_uri,
                                               bool overwrite, absl::string_view field) {
  absl::StatusOr<Location> location = ResolveDirectory(router, output_uri, field);
  if (!location.ok()) return location.status();
  if (overwrite) return absl::OkStatus();
  absl::StatusOr<std::vector<ObjectEntry>> entries = location->store->List(location->uri);
  if (!entries.ok()) return entries.status();
  for (const ObjectEntry& entry : *entries) {
    if (location->store->IsStagingName(entry.relative_name)) continue;
    return MakeError(absl::StatusCode::kFailedPrecondition, "OUTPUT_NOT_EMPTY",
                     absl::StrCat("output '", location->uri, "' already holds files (e.g. '", entry.relative_name,
                                  "'); set overwrite to replace them"),
                     {{"field", std::string(field)}});
  }
  return absl::OkStatus();
}

absl::Status Publication::CheckFileVacant(const StorageRouter& router, absl::string_view output_uri, bool overwrite,
                                          absl::string_view field) {
  absl::StatusOr<Location> location = ResolveField(router, output_uri, field);
  if (!location.ok()) return location.status();
  return overwrite ? absl::OkStatus() : FileVacant(*location, field);
}

absl::Status Publication::CheckApartFromInput(const ModelView& input, const StorageRouter& router,
                                              absl::string_view output_uri, absl::string_view field) {
  absl::StatusOr<Location> output = ResolveField(router, output_uri, field);
  if (!output.ok()) return output.status();
  for (const ModelFile& file : input.files) {
    if (ParentUri(file.uri) == output->uri) {
      return FieldError("OUTPUT_OVERLAPS_INPUT", field,
                        absl::StrCat("output '", output->uri, "' is the directory of input file '", file.uri,
                                     "'; write to another directory"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Publication> Publication::ForDirectory(const StorageRouter& router, absl::string_view output_uri,
                                                      bool overwrite, uint32_t attempt, absl::string_view field) {
  if (absl::Status s = CheckDirectoryVacant(router, output_uri, overwrite || attempt > 1, field); !s.ok()) return s;
  absl::StatusOr<Location> location = ResolveDirectory(router, output_uri, field);
  if (!location.ok()) return location.status();
  Publication publication(location->store, location->uri, location->uri, std::string(kManifestName));
  if (absl::Status s = RemoveStagingLeftovers(publication.store(), publication.directory_, ""); !s.ok()) return s;
  publication.previous_names_ = ManifestArtifactNames(publication.store(), publication.UriOf(kManifestName));
  return publication;
}

absl::StatusOr<Publication> Publication::ForFile(const StorageRouter& router, absl::string_view output_uri,
                                                 bool overwrite, uint32_t attempt, absl::string_view field,
                                                 const std::vector<std::string>& sibling_uris) {
  absl::StatusOr<Location> location = ResolveField(router, output_uri, field);
  if (!location.ok()) return location.status();
  const bool replace = overwrite || attempt > 1;
  if (!replace) {
    if (absl::Status s = FileVacant(*location, field); !s.ok()) return s;
  }
  Publication publication(location->store, location->uri, std::string(ParentUri(location->uri)),
                          absl::StrCat(BaseName(location->uri), ".manifest.json"));
  std::vector<std::string> files = {location->uri};
  for (const std::string& sibling : sibling_uris) {
    absl::StatusOr<Location> part = ResolveField(router, sibling, field);
    if (!part.ok()) return part.status();
    if (!replace) {
      if (absl::Status s = FileVacant(*part, field); !s.ok()) return s;
    }
    files.push_back(part->uri);
  }
  for (const std::string& file : files) {
    absl::Status s = RemoveStagingLeftovers(publication.store(), std::string(ParentUri(file)),
                                            absl::StrCat(".", BaseName(file), "."));
    if (!s.ok()) return s;
  }
  publication.previous_names_ =
      ManifestArtifactNames(publication.store(), publication.UriOf(publication.manifest_name_));
  return publication;
}

Publication::Publication(Publication&& other) noexcept = default;

Publication& Publication::operator=(Publication&& other) noexcept {
  if (this != &other) {
    RollBack();
    store_ = other.store_;
    uri_ = std::move(other.uri_);
    directory_ = std::move(other.directory_);
    manifest_name_ = std::move(other.manifest_name_);
    previous_names_ = std::move(other.previous_names_);
    staged_ = std::move(other.staged_);
    committed_ = std::move(other.committed_);
    other.staged_.clear();
    other.committed_.clear();
  }
  return *this;
}

Publication::~Publication() { RollBack(); }

void Publication::AbortStaged() {
  for (Staged& staged : staged_) {
    if (staged.writer != nullptr) staged.writer->Abort();
  }
  staged_.clear();
}

std::string Publication::UriOf(absl::string_view name) const { return JoinUri(directory_, name); }

absl::StatusOr<std::unique_ptr<ObjectWriter>> Publication::OpenWriter(const std::string& uri) {
  return store_->OpenForWrite(uri);
}

void Publication::Hold(std::unique_ptr<ObjectWriter> writer, v1::Artifact artifact, ObjectChecker check) {
  staged_.push_back({std::move(writer), std::move(artifact), std::move(check)});
}

std::vector<v1::Artifact> Publication::artifacts() const {
  std::vector<v1::Artifact> artifacts = committed_;
  for (const Staged& staged : staged_) artifacts.push_back(staged.artifact);
  return artifacts;
}

absl::StatusOr<v1::Artifact> Publication::Stage(PipelinedWriter& out, uint64_t size_bytes, absl::string_view role,
                                                const ObjectChecker& check, ProgressTracker& tracker,
                                                const JobContext& context) {
  auto fail = [&](absl::Status status) -> absl::Status {
    out.Abort();
    return status;
  };
  tracker.SetPhase("verify");
  const std::string uri = out.uri();
  std::string digest;
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> readback = out.ReadBack();
  if (readback.ok()) {
    if ((*readback)->size_bytes() != size_bytes) {
      return fail(
          MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                    absl::StrCat("'", uri, "' has ", (*readback)->size_bytes(), " bytes, planned ", size_bytes)));
    }
    if (absl::Status s = check(**readback); !s.ok()) return fail(s);
    absl::StatusOr<std::string> streamed = out.ReadBackDigest();
    absl::StatusOr<std::string> hashed = streamed.ok() || !absl::IsUnimplemented(streamed.status())
                                             ? streamed
                                             : Sha256Hex(**readback, nullptr, [&] { return context.stop_requested(); });
    if (!hashed.ok()) return fail(absl::IsCancelled(hashed.status()) ? StopStatus(context) : hashed.status());
    digest = *hashed;
  } else if (!absl::IsUnimplemented(readback.status())) {
    return fail(readback.status());
  }
  if (absl::Status s = StopStatus(context); !s.ok()) return fail(s);
  absl::StatusOr<std::unique_ptr<ObjectWriter>> inner = out.Release();
  if (!inner.ok()) return inner.status();
  v1::Artifact artifact;
  artifact.set_uri(uri);
  artifact.set_size_bytes(size_bytes);
  artifact.set_sha256(digest);
  artifact.set_role(std::string(role));
  Hold(*std::move(inner), artifact, check);
  return artifact;
}

absl::StatusOr<v1::Artifact> Publication::Write(const std::string& uri, absl::string_view role,
                                                const ObjectProducer& produce, ProgressTracker& tracker,
                                                const JobContext& context) {
  absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = OpenWriter(uri);
  if (!writer.ok()) return writer.status();
  PipelinedWriter out(*std::move(writer), kQueuedWriteBytes, PipelinedWriter::ReadBackCheck::kCompare);
  absl::StatusOr<WrittenObject> written = produce(out);
  if (!written.ok()) {
    out.Abort();
    return written.status();
  }
  return Stage(out, written->size_bytes, role, written->check, tracker, context);
}

absl::StatusOr<v1::Artifact> Publication::WriteSmall(const std::string& uri, const std::string& text,
                                                     absl::string_view role) {
  absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = OpenWriter(uri);
  if (!writer.ok()) return writer.status();
  if (absl::Status s = (*writer)->Append({reinterpret_cast<const std::byte*>(text.data()), text.size()}); !s.ok()) {
    (*writer)->Abort();
    return s;
  }
  v1::Artifact artifact;
  artifact.set_uri(uri);
  artifact.set_size_bytes(text.size());
  artifact.set_sha256(Sha256Hex(text));
  artifact.set_role(std::string(role));
  Hold(*std::move(writer), artifact, nullptr);
  return artifact;
}

void Publication::RollBack() {
  AbortStaged();
  for (const v1::Artifact& artifact : committed_) store_->Delete(artifact.uri()).IgnoreError();
  if (!committed_.empty()) store_->Delete(UriOf(manifest_name_)).IgnoreError();
  committed_.clear();
}

absl::Status Publication::Commit(ProgressTracker& tracker, const JobContext& context) {
  if (committed_.empty()) {  // a stop is honoured up to the first commit
    if (absl::Status s = StopStatus(context); !s.ok()) return s;
    if (absl::Status s = context.ConfirmStillOwner(); !s.ok()) {
      AbortStaged();
      return s;
    }
  }
  tracker.SetPhase("publish");
  for (Staged& staged : staged_) {
    if (absl::Status s = staged.writer->Commit(); !s.ok()) {
      RollBack();
      return s;
    }
    staged.writer.reset();
    committed_.push_back(staged.artifact);
    v1::Artifact& artifact = committed_.back();
    if (!artifact.sha256().empty()) continue;
    // The store reads only what is committed (S3): check and hash it now.
    absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store_->OpenForRead(artifact.uri());
    absl::Status checked = !object.ok() ? object.status() : staged.check ? staged.check(**object) : absl::OkStatus();
    absl::StatusOr<std::string> hashed = checked.ok() ? Sha256Hex(**object) : checked;
    if (!hashed.ok()) {
      RollBack();
      return hashed.status();
    }
    artifact.set_sha256(*hashed);
  }
  staged_.clear();
  return absl::OkStatus();
}

absl::Status Publication::Publish(nlohmann::ordered_json manifest, v1::JobResult& result, ProgressTracker& tracker,
                                  const JobContext& context) {
  if (absl::Status s = Commit(tracker, context); !s.ok()) return s;
  if (absl::Status s = context.ConfirmStillOwner(); !s.ok()) {
    // The job is another run's now: what this run committed under the final names is that run's
    // leftovers (a rerun replaces them), and deleting it here could delete that run's files.
    committed_.clear();
    return s;
  }
  absl::StatusOr<v1::Artifact> manifest_artifact =
      WriteManifestTo(*store_, UriOf(manifest_name_), std::move(manifest), committed_);
  if (!manifest_artifact.ok()) {
    RollBack();
    return manifest_artifact.status();
  }
  std::set<std::string> kept = {manifest_name_};
  for (const v1::Artifact& a : committed_) kept.insert(ArtifactName(directory_, a.uri()));
  for (const std::string& name : previous_names_) {
    if (!kept.contains(name)) store_->Delete(UriOf(name)).IgnoreError();
  }
  previous_names_.clear();
  uint64_t written = manifest_artifact->size_bytes();
  for (const v1::Artifact& a : committed_) {
    written += a.size_bytes();
    *result.add_artifacts() = a;
  }
  *result.add_artifacts() = *manifest_artifact;
  result.mutable_figures()->set_bytes_written(written);
  committed_.clear();  // published: nothing to roll back
  return absl::OkStatus();
}

}  // namespace modelsmith
