// One base tensor of a LoRA merge rewritten with its updates, streamed in row chunks:
// decode the stored rows to F32, add each adapter's update in order, encode once in the stored
// type. The bytes written have the tensor's stored size, so the file's header stays valid.
#ifndef MODELSMITH_WORKERS_JOBS_LORA_MERGE_TENSOR_H_
#define MODELSMITH_WORKERS_JOBS_LORA_MERGE_TENSOR_H_

#include <vector>

#include "absl/status/statusor.h"
#include "workers/jobs/job_context.h"
#include "workers/jobs/lora_merge_plan.h"
#include "workers/jobs/progress_tracker.h"
#include "workers/jobs/rate_limiter.h"
#include "workers/quant/low_rank_update.h"
#include "workers/quant/quality.h"
#include "workers/storage/pipelined_writer.h"

namespace modelsmith {

struct MergedTensorFigures {
  QualityStats update;   // the base W against the exact F32 merge W': relative_error() = ||W' - W|| / ||W||
  QualityStats written;  // W' against what was written (its rounding to the stored type)
};

// The updates of `t` in adapter order, with each module's A, B and DoRA magnitude read from its
// adapter file as F32 (B's rows, and the magnitudes, reordered to the stored row order of a
// permuted GGUF Q/K weight).
absl::StatusOr<std::vector<LowRankUpdate>> LoadUpdates(const MergeTensor& t);

// Appends exactly t.base->size_bytes to `out`: the merged tensor in its stored type.
absl::Status WriteMergedTensor(const MergeTensor& t, const std::vector<LowRankUpdate>& updates, const RandomAccessObject& file,
                               PipelinedWriter& out, ProgressTracker& tracker, RateLimiter& pace, const JobContext& context,
                               MergedTensorFigures* figures);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_LORA_MERGE_TENSOR_H_
