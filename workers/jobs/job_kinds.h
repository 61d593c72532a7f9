// The job kinds, and the one place that sends a spec to the code of its kind.
#ifndef MODELSMITH_WORKERS_JOBS_JOB_KINDS_H_
#define MODELSMITH_WORKERS_JOBS_JOB_KINDS_H_

#include "absl/strings/string_view.h"
#include <string_view>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/job_context.h"

namespace modelsmith {

// The kind the spec's oneof holds (UNSPECIFIED when none).
v1::JobKind KindOf(const v1::JobSpec& spec);

// "shard", "convert", ... (lowercase; used in metrics labels, logs and the CLI).
absl::string_view KindName(v1::JobKind kind);

// Field checks without I/O. INVALID_ARGUMENT (reason and field) for a bad spec; UNIMPLEMENTED
// (reason KIND_NOT_IMPLEMENTED) for a kind this build does not run yet.
absl::Status ValidateSpec(const v1::JobSpec& spec);

// Submit-time checks with I/O; returns the job's estimated peak memory in bytes.
absl::StatusOr<uint64_t> PreflightJob(const v1::JobSpec& spec, const StorageRouter& router);

// Runs the job to completion. CANCELLED when context.stop_requested() became true.
absl::StatusOr<v1::JobResult> RunJob(const JobRun& run, JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_JOB_KINDS_H_
