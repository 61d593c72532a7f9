// The stop check and the paced byte copy every job kind uses.
#ifndef MODELSMITH_WORKERS_JOBS_CORE_PACED_COPY_H_
#define MODELSMITH_WORKERS_JOBS_CORE_PACED_COPY_H_

#include <cstdint>

#include "absl/status/status.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/storage/object_store.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

// CANCELLED (reason CANCELLED) once the job should stop; OK otherwise.
absl::Status StopStatus(const JobContext& context);

// Copies bytes [offset, offset + length) of `file` unchanged to `out`, paced by `pace`, in pieces
// of at most 64 MiB; polls for a stop before each piece and counts each piece in `tracker`.
absl::Status CopyByteRange(const RandomAccessObject& file, uint64_t offset, uint64_t length, ObjectWriter& out,
                           ProgressTracker& tracker, RateLimiter& pace, const JobContext& context);

// The same for a tensor's bytes.
absl::Status CopyTensorBytes(const TensorInfo& tensor, const RandomAccessObject& file, ObjectWriter& out,
                             ProgressTracker& tracker, RateLimiter& pace, const JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CORE_PACED_COPY_H_
