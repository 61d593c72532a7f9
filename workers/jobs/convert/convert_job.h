// The convert job: a checkpoint (torch .bin/.pt/.ckpt single or sharded, safetensors, or a
// Llama-family GGUF, gguf_to_hf.h) to safetensors, with dtype casts, renaming and sharding
// (convert_plan.h has the rules); with the GGUF target, a Llama-family checkpoint to GGUF
// (convert_gguf_job.h), which the entry points below hand over to.
//
// plan:     open the input's headers (the pickle of a torch file, through the restricted
//           unpickler), plan names, dtypes and files;
// execute:  per file, stream the header and then each tensor, read in chunks of 4 Mi elements (a
//           strided view whole), gathered, cast and queued for the writer thread;
// verify:   the writer thread re-reads every range it wrote and compares it bit for bit with what
//           it was given (the source's bytes, cast where the dtype changes); the SHA-256 comes
//           from those bytes; the header and tensor table are re-parsed against the plan. Where
//           the store reads back only after commit (S3), the committed tensors are compared
//           with the source read again;
// publish:  files, then the index (more than one file), then the manifest, which lists the
//           aliases left out, the entries skipped, the renames and every cast with its counts.
// Casts that overflow to Inf (F16/BF16) or saturate (F8) raise a warning naming the tensor.
// Peak memory: the chunks in flight (two or three of 4 Mi elements) plus one strided tensor.
#ifndef MODELSMITH_WORKERS_JOBS_CONVERT_CONVERT_JOB_H_
#define MODELSMITH_WORKERS_JOBS_CONVERT_CONVERT_JOB_H_

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include <memory>

#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/job_kind.h"
#include "workers/jobs/convert/convert_plan.h"

namespace modelsmith {

// Submit-time checks with I/O; returns the estimated peak memory in bytes.
struct ConvertSafetensorsPlan;  // convert_job.cc
struct ConvertGgufPlan;         // convert_gguf_job.cc
struct ConvertJobPlan {
  std::shared_ptr<ConvertSafetensorsPlan> safetensors;  // one of the two is set
  std::shared_ptr<ConvertGgufPlan> gguf;
  uint64_t estimated_peak_bytes = 0;
};

// The job kind (core/job_kind.h has the contract of each function). Parse: convert_plan.h's
// ParseConvertOptions. MakePlan: the input opened and planned for its target, the output apart
// from the input's directory (OUTPUT_OVERLAPS_INPUT) and vacant.
class ConvertJob {
 public:
  using Options = ConvertOptions;
  using Plan = ConvertJobPlan;
  static absl::StatusOr<ConvertOptions> Parse(const v1::JobSpec& spec);
  static absl::StatusOr<ConvertJobPlan> MakePlan(const ConvertOptions& options, const PlanEnv& env);
  static absl::StatusOr<v1::JobResult> Produce(ConvertJobPlan& plan, const JobRun& run, JobContext& context);
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CONVERT_CONVERT_JOB_H_
