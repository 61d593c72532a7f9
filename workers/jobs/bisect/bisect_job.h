// The bisect job: split a checkpoint into N chunks, contiguous in execution order, whose stored
// sizes are as even as a contiguous split allows.
//
// plan: open the input (safetensors single or sharded, torch .bin single or sharded, GGUF single
//   or split), group its tensors into units (bisect_plan.h: blocks, modules or tensors, quantized
//   companions with their weight), and choose the cuts that minimise the largest chunk.
//   N greater than the number of units is INVALID_ARGUMENT (BISECT_TOO_MANY_CHUNKS, field
//   bisect.chunks), naming the unit count and the finer granularity that would allow it.
// execute: per chunk, one checkpoint in the input's format (bisect_chunk_writer.h) named
//   "<stem>-chunk<k>-of-<N><ext>" ("model-chunk1-of-2.safetensors", "pytorch_model-chunk2-of-4.bin",
//   "llama-Q4_K-chunk1-of-2.gguf"), every range re-read and compared as it is written;
// verify: the chunk's tensor table read back before it is published;
// publish: the chunks, then "<stem>.chunks.json" (which units, blocks and tensors each chunk
//   holds, in load order, with sizes and SHA-256), then the manifest.
// The figures give each chunk's stored tensor bytes and the imbalance (max/mean).
#ifndef MODELSMITH_WORKERS_JOBS_BISECT_BISECT_JOB_H_
#define MODELSMITH_WORKERS_JOBS_BISECT_BISECT_JOB_H_

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include <memory>

#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/job_kind.h"

namespace modelsmith {

inline constexpr uint32_t kDefaultBisectChunks = 2;
inline constexpr uint32_t kMaxBisectChunks = 256;

struct BisectOptions {
  v1::BisectSpec spec;  // validated
  uint32_t chunks = kDefaultBisectChunks;
  bool onnx = false;    // an ONNX graph (bisect_onnx_job.h)
  bool coreml = false;  // a Core ML package (bisect_coreml_job.h); else a checkpoint
};

struct BisectCheckpointPlan;  // bisect_job.cc
struct OnnxBisectJobPlan;     // bisect_onnx_job.cc
struct CoreMlBisectJobPlan;   // bisect_coreml_job.cc
struct BisectJobPlan {
  std::shared_ptr<BisectCheckpointPlan> checkpoint;  // one of the three is set
  std::shared_ptr<OnnxBisectJobPlan> onnx;
  std::shared_ptr<CoreMlBisectJobPlan> coreml;
  uint64_t estimated_peak_bytes = 0;
};

// The job kind (core/job_kind.h has the contract of each function). Parse: INVALID_ARGUMENT for a
// missing input or output, chunks of 1 or over kMaxBisectChunks, an unknown granularity. MakePlan:
// the input opened, the cuts decided (BISECT_TOO_MANY_CHUNKS when there are fewer units than
// chunks), the output apart from the input and vacant.
class BisectJob {
 public:
  using Options = BisectOptions;
  using Plan = BisectJobPlan;
  static absl::StatusOr<BisectOptions> Parse(const v1::JobSpec& spec);
  static absl::StatusOr<BisectJobPlan> MakePlan(const BisectOptions& options, const PlanEnv& env);
  static absl::StatusOr<v1::JobResult> Produce(BisectJobPlan& plan, const JobRun& run, JobContext& context);
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_BISECT_BISECT_JOB_H_
