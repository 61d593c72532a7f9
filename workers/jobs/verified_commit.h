// The last two phases every job runs on a file it wrote: verify, then publish.
//
// The written object is read back and checked by `verify` (which returns its SHA-256) before the
// commit when the store can read back what is staged (local files), else right after the commit
// (S3), in which case a failed check deletes the committed object. A stop request is honoured up
// to the commit. On error `out` is left for the caller to abort (Abort is a no-op once committed).
#ifndef MODELSMITH_WORKERS_JOBS_VERIFIED_COMMIT_H_
#define MODELSMITH_WORKERS_JOBS_VERIFIED_COMMIT_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/job_context.h"
#include "workers/jobs/progress_tracker.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

using ObjectVerifier = std::function<absl::StatusOr<std::string>(const RandomAccessObject&)>;

// Returns the committed object's artifact: `uri`, `size_bytes`, the verified SHA-256 and `role`.
absl::StatusOr<v1::Artifact> VerifyAndCommit(ObjectWriter& out, ObjectStore& store, const std::string& uri,
                                             uint64_t size_bytes, absl::string_view role, const ObjectVerifier& verify,
                                             ProgressTracker& tracker, const JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_VERIFIED_COMMIT_H_
