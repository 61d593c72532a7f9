// OutputLocation: the rules every job follows for the place it writes to.
//
//  - A location that already holds files is FAILED_PRECONDITION (OUTPUT_NOT_EMPTY) unless the
//    spec says overwrite, or this is a rerun of the same job (attempt > 1), whose leftovers
//    are its own.
//  - Staging leftovers of writers that never committed (a killed process) are removed first.
//  - An existing manifest is removed before anything else is written, so the location is
//    never "complete" while it mixes old and new files; the files it listed are removed after
//    the new ones are committed, unless the new output reuses their names.
//  - The manifest ("modelsmith.manifest.json") is written last: a location is complete if and
//    only if its manifest exists.
#ifndef MODELSMITH_WORKERS_JOBS_CORE_OUTPUT_LOCATION_H_
#define MODELSMITH_WORKERS_JOBS_CORE_OUTPUT_LOCATION_H_

#include "absl/strings/string_view.h"
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"
#include "modelsmith/v1/job.pb.h"
#include "workers/formats/model_view.h"
#include "workers/jobs/core/job_context.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

inline constexpr absl::string_view kManifestName = "modelsmith.manifest.json";

// Writes a small object (a manifest, a config.json) in one piece and commits it; returns its
// artifact entry with `role`.
absl::StatusOr<v1::Artifact> WriteSmallObject(ObjectStore& store, const std::string& uri, const std::string& text,
                                              absl::string_view role);

// Writes `manifest` plus an "artifacts" list built from `artifacts` to `uri`, committed last by
// the caller's contract. Returns the manifest's own artifact entry.
absl::StatusOr<v1::Artifact> WriteManifestTo(ObjectStore& store, const std::string& uri, nlohmann::ordered_json manifest,
                                             const std::vector<v1::Artifact>& artifacts);

// The fields every manifest starts with: tool version and revision, job id, kind, spec, and the
// input model's uri, format, tensor count and bytes.
nlohmann::ordered_json ManifestHeader(const JobRun& run, absl::string_view kind, const ModelView& input);

// The spec or any message as JSON for a manifest (proto field names).
nlohmann::ordered_json MessageJson(const google::protobuf::Message& message);

// Resolves `output_uri` and checks it could receive a job's output now (the submit-time check).
// `field` names the spec field in errors.
absl::Status CheckOutputVacant(const StorageRouter& router, absl::string_view output_uri,
                               bool overwrite, absl::string_view field);

// The same rules for a job whose output is one file (a GGUF file): the file and its manifest,
// "<file>.manifest.json", must not exist unless overwriting or rerunning; staging leftovers of
// this file are removed; the old manifest goes first.
class OutputFile {
 public:
  static absl::StatusOr<OutputFile> Prepare(const StorageRouter& router, absl::string_view output_uri, bool overwrite,
                                            uint32_t attempt, absl::string_view field);
  // The submit-time check.
  static absl::Status CheckVacant(const StorageRouter& router, absl::string_view output_uri, bool overwrite,
                                  absl::string_view field);

  ObjectStore& store() const { return *location_.store; }
  const std::string& uri() const { return location_.uri; }
  std::string manifest_uri() const { return uri() + ".manifest.json"; }

 private:
  explicit OutputFile(Location location) : location_(std::move(location)) {}
  Location location_;
};

class OutputLocation {
 public:
  // Applies the rules above. `attempt` is the job's attempt number (1 on the first run).
  static absl::StatusOr<OutputLocation> Prepare(const StorageRouter& router,
                                                absl::string_view output_uri, bool overwrite,
                                                uint32_t attempt, absl::string_view field);

  ObjectStore& store() const { return *location_.store; }
  const std::string& uri() const { return location_.uri; }
  std::string UriOf(absl::string_view name) const;

  // Deletes the files of the replaced manifest that `kept_names` does not contain.
  absl::Status RemoveReplaced(const std::set<std::string>& kept_names);

  // Best effort: deletes the named objects (a failed or cancelled job's committed files).
  void Discard(const std::vector<std::string>& names);

  // Writes the manifest: `manifest` plus "artifacts" built from `artifacts`. Returns the
  // manifest's own artifact entry.
  absl::StatusOr<v1::Artifact> WriteManifest(nlohmann::ordered_json manifest,
                                             const std::vector<v1::Artifact>& artifacts);

  // The last step of a job that wrote `committed_names` (its `artifacts`): writes the manifest,
  // then (best effort) removes the replaced manifest's files that are not among them, appends the
  // manifest to `result`'s artifacts and sets figures.bytes_written to the sum of all of them. On
  // error the committed files are discarded.
  absl::Status Complete(nlohmann::ordered_json manifest, const std::vector<v1::Artifact>& artifacts,
                        const std::vector<std::string>& committed_names, v1::JobResult& result);

 private:
  explicit OutputLocation(Location location) : location_(std::move(location)) {}

  Location location_;
  std::vector<std::string> replaced_names_;  // from the manifest that was removed
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CORE_OUTPUT_LOCATION_H_
