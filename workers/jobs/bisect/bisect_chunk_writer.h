// One chunk of a bisect job's output: a checkpoint in the input's format holding some of its
// tensors, their bytes copied unchanged.
//
//   safetensors  the reference writer's header and order, the input's __metadata__ kept with
//                "format": "pt";
//   GGUF         the input's key-values (without split.* keys: a chunk is a model file of its own,
//                not a gguf-split part) and alignment, tensors in execution order;
//   torch        torch_writer.h: one contiguous storage per tensor, a view read out of its
//                storage; a tied name gets its own copy.
// The chunk is checked before it is published by reading its tensor table back (names, types,
// shapes, sizes in the planned order).
#ifndef MODELSMITH_WORKERS_JOBS_BISECT_BISECT_CHUNK_WRITER_H_
#define MODELSMITH_WORKERS_JOBS_BISECT_BISECT_CHUNK_WRITER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/formats/model_view.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/core/publication.h"
#include "workers/storage/pipelined_writer.h"

namespace modelsmith {

struct ChunkIo {
  ProgressTracker& tracker;
  RateLimiter& pace;
  const JobContext& context;
};

// Writes `tensors` (in execution order; each names a file of `model`) into `out` in the format of
// `model`. `torch_prefix` is the archive's top directory for torch output. CANCELLED when the job
// is stopped; the errors of the store and of reading the input otherwise.
absl::StatusOr<WrittenObject> WriteChunkFile(const ModelView& model, const std::vector<TensorInfo>& tensors,
                                             const std::string& torch_prefix, PipelinedWriter& out, ChunkIo io);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_BISECT_BISECT_CHUNK_WRITER_H_
