// The manifest every job writes last: "modelsmith.manifest.json" for a directory output,
// "<file>.manifest.json" for a one-file output. An output is complete if and only if its
// manifest exists; the manifest lists every artifact with name, uri, role, size and SHA-256,
// after the kind's own fields (the header below, figures, quality tables).
#ifndef MODELSMITH_WORKERS_JOBS_CORE_MANIFEST_H_
#define MODELSMITH_WORKERS_JOBS_CORE_MANIFEST_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "modelsmith/v1/job.pb.h"
#include "nlohmann/json.hpp"
#include "workers/formats/model_view.h"
#include "workers/jobs/core/job_context.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

inline constexpr absl::string_view kManifestName = "modelsmith.manifest.json";

// The fields every manifest starts with: tool version and revision, job id, owner, kind, spec, and the
// input model's uri, format, tensor count and bytes.
nlohmann::ordered_json ManifestHeader(const JobRun& run, absl::string_view kind, const ModelView& input);
// The same without the input, for kinds whose input is not a checkpoint (an ONNX graph, a Core ML
// program), which add their own "input" object.
nlohmann::ordered_json ManifestHeader(const JobRun& run, absl::string_view kind);

// The spec or any message as JSON for a manifest (proto field names).
nlohmann::ordered_json MessageJson(const google::protobuf::Message& message);

// An artifact's "name" in a manifest: its path below the manifest's `directory`
// ("unet/config.json" in a pipeline output), or its base name when it lies elsewhere.
std::string ArtifactName(absl::string_view directory, absl::string_view uri);

// True for a name a manifest may list for deletion on overwrite: relative, '/'-separated, with no
// empty, "." or ".." segment (a hostile manifest must not reach outside its location).
bool SafeArtifactName(absl::string_view name);

// Writes `manifest` plus an "artifacts" list built from `artifacts` to `uri` in one piece and
// commits it (atomically replacing an earlier manifest). Returns the manifest's own artifact.
absl::StatusOr<v1::Artifact> WriteManifestTo(ObjectStore& store, const std::string& uri,
                                             nlohmann::ordered_json manifest,
                                             const std::vector<v1::Artifact>& artifacts);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CORE_MANIFEST_H_
