// The registry of job kinds: the one place that knows every kind and sends a spec to the code of
// its kind. Adding a kind is its folder with a class on the typed lifecycle (core/job_kind.h:
// Parse, MakePlan, Produce) and one row in job_kinds.cc.
#ifndef MODELSMITH_WORKERS_JOBS_JOB_KINDS_H_
#define MODELSMITH_WORKERS_JOBS_JOB_KINDS_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/core/job_context.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

// What the lifecycle needs of one kind: the adapters of core/job_kind.h over the kind's class.
// Every function takes the whole spec; the registry only calls a kind's functions with a spec
// that holds that kind.
struct JobKindEntry {
  v1::JobKind kind;
  absl::string_view name;          // "shard": metrics labels, logs and the CLI
  absl::string_view output_field;  // "shard.output": the spec field naming the job's output
  // Parse: field checks without I/O.
  absl::Status (*validate)(const v1::JobSpec& spec);
  // Parse + MakePlan at submit (the input opened, the output vacant): the plan's estimated peak
  // memory, which the server keeps as the job's admission size.
  absl::StatusOr<uint64_t> (*preflight)(const v1::JobSpec& spec, const StorageRouter& router,
                                        const std::function<absl::Status()>& after_parse);
  // Parse + MakePlan + Produce: runs the job; CANCELLED once the context asks it to stop.
  absl::StatusOr<v1::JobResult> (*run)(const JobRun& run, JobContext& context);
  // The output uri as the spec names it.
  const std::string& (*output)(const v1::JobSpec& spec);
};

// The entry for the kind `spec` holds; null when the spec holds none.
const JobKindEntry* FindJobKind(const v1::JobSpec& spec);

// The kind the spec's oneof holds (UNSPECIFIED when none).
v1::JobKind KindOf(const v1::JobSpec& spec);

// "shard", "convert", ... (lowercase; used in metrics labels, logs and the CLI).
absl::string_view KindName(v1::JobKind kind);

// Field checks without I/O. INVALID_ARGUMENT (reason and field) for a bad spec, MISSING_FIELD for
// a spec that holds no kind.
absl::Status ValidateSpec(const v1::JobSpec& spec);

// PreflightJob and RunJob turn an exception escaping a kind into a status: RESOURCE_EXHAUSTED
// (OUT_OF_MEMORY) for std::bad_alloc, INTERNAL otherwise.

// Submit-time checks with I/O; returns the job's estimated peak memory in bytes. `after_parse`
// (optional) runs once the spec has parsed, before the input is opened; its error is returned.
absl::StatusOr<uint64_t> PreflightJob(const v1::JobSpec& spec, const StorageRouter& router,
                                      const std::function<absl::Status()>& after_parse = nullptr);

// Runs the job to completion. CANCELLED when context.stop_requested() became true.
absl::StatusOr<v1::JobResult> RunJob(const JobRun& run, JobContext& context);

// Where a job writes: the canonical uri (resolved by `router`, so two spellings of one place
// compare equal) and the spec field that names it. Errors as StorageRouter::Resolve, with the
// field attached.
struct JobOutput {
  std::string uri;
  std::string field;
};
absl::StatusOr<JobOutput> ResolveJobOutput(const v1::JobSpec& spec, const StorageRouter& router);

// True when two canonical output uris name the same place or one lies inside the other: two
// jobs writing them would write over each other's files.
bool OutputsOverlap(absl::string_view a, absl::string_view b);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_JOB_KINDS_H_
