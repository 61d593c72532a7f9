// The last two phases every job runs on a file it wrote: verify, then publish.
//
// The written object is re-opened and checked by `check` (headers, tensor tables, sizes) before
// the commit when the store can read back what is staged (local files), else right after the
// commit (S3), in which case a failed check deletes the committed object. Its SHA-256 is the one
// the writer took while re-reading each range from the file as it was written (PipelinedWriter
// with ReadBackCheck::kDigest, or taken from the bytes compared equal with kCompare), or, where the store cannot read back early, a pass over the committed
// object. A stop request is honoured up to the commit. On error `out` is left for the caller to
// abort (Abort is a no-op once committed).
#ifndef MODELSMITH_WORKERS_JOBS_CORE_VERIFIED_COMMIT_H_
#define MODELSMITH_WORKERS_JOBS_CORE_VERIFIED_COMMIT_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/storage/object_store.h"
#include "workers/storage/pipelined_writer.h"

namespace modelsmith {

using ObjectChecker = std::function<absl::Status(const RandomAccessObject&)>;

// What a producer wrote: the planned size of the object and what it must satisfy.
struct WrittenObject {
  uint64_t size_bytes = 0;
  ObjectChecker check;
};
using ObjectProducer = std::function<absl::StatusOr<WrittenObject>(PipelinedWriter&)>;

// Returns the committed object's artifact: `uri`, `size_bytes`, the verified SHA-256 and `role`.
absl::StatusOr<v1::Artifact> VerifyAndCommit(PipelinedWriter& out, ObjectStore& store, const std::string& uri,
                                             uint64_t size_bytes, absl::string_view role, const ObjectChecker& check,
                                             ProgressTracker& tracker, const JobContext& context);

// The whole life of one output object: opens `uri` in `store` behind a PipelinedWriter that
// compares every range it writes with what it was given (kCompare, 32 MiB queued), runs
// `produce` on it, then VerifyAndCommit. On any failure the writer is aborted and the error
// returned; nothing stays at `uri`.
absl::StatusOr<v1::Artifact> WriteVerifiedObject(ObjectStore& store, const std::string& uri, absl::string_view role,
                                                 const ObjectProducer& produce, ProgressTracker& tracker, const JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CORE_VERIFIED_COMMIT_H_
