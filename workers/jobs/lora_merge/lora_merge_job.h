// The LoRA merge job: adapters (PEFT, kohya, diffusers; lora_adapter.h) merged into a base
// checkpoint, which is written back as it was except for the merged tensors' values.
//
// plan: lora_merge_plan.h (open, parse, match strictly; what is not built is UNIMPLEMENTED);
// execute: each base file is mirrored byte for byte (header, padding, untouched tensors copied
//   unchanged), and each merged tensor is rewritten in place in its own type: rows in chunks of
//   about 4M elements are decoded to F32 (a cast, or the ggml decoder for a quantized GGUF type),
//   every adapter's update is added in the spec's order (low_rank_update.h), and the rows are
//   encoded once, in the same type (policy REQUANTIZE for a quantized one). Per tensor the job
//   measures ||W' - W|| / ||W|| of the exact F32 merge W', and the SNR of what was written
//   against W'. Memory: a chunk per compute thread and the writer's queue, plus one module's A
//   and B in F32 (about 100 MB whatever the model size). A quantized safetensors group (a
//   bitsandbytes, quanto or ChatGLM weight with its companions) is requantized whole in memory
//   when its first tensor comes and written tensor by tensor from there: its quantized size on top.
// verify: every range is re-read from the file right after it is written and compared with the
//   bytes the job produced (PipelinedWriter kCompare: the SHA-256 is taken from those bytes on
//   the producing thread, which keeps the writer thread, already busy with the kernel's copies,
//   off the critical path); then the file's size and its header bytes (everything before the
//   first tensor) must equal the base's.
// publish: safetensors bases go to a directory with the base's file names, its index (copied
//   unchanged) and config.json; a GGUF base to the output .gguf file (a split base's parts named
//   as gguf-split names them). The manifest comes last with every merged tensor's figures, the
//   adapters as detected and every skipped key.
// Warnings: LORA_KEY_SKIPPED for each key left out (allow_partial), LORA_REQUANTIZED once per
// quantized type merged into.
#ifndef MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_JOB_H_
#define MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_JOB_H_

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include <memory>
#include <string>
#include <vector>

#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/job_kind.h"
#include "workers/jobs/lora_merge/lora_merge_plan.h"

namespace modelsmith {

struct LoraMergeOptions {
  v1::LoraMergeSpec spec;  // validated
};

struct LoraMergeJobPlan {
  std::shared_ptr<LoraMergePlan> merge;  // the base, the adapters, every update
  bool directory = true;                 // a safetensors or torch base; else one GGUF file or its parts
  std::vector<std::string> output_uris;  // per base file, resolved
  uint64_t estimated_peak_bytes = 0;
};

// The job kind (core/job_kind.h has the contract of each function). Parse: lora_merge_plan.h's
// ValidateLoraMergeSpec. MakePlan: the base and every adapter opened and matched
// (MakeLoraMergePlan), the output shaped like the base (a .gguf file for a GGUF base, else a
// directory), apart from every input (OUTPUT_OVERLAPS_INPUT) and vacant.
class LoraMergeJob {
 public:
  using Options = LoraMergeOptions;
  using Plan = LoraMergeJobPlan;
  static absl::StatusOr<LoraMergeOptions> Parse(const v1::JobSpec& spec);
  static absl::StatusOr<LoraMergeJobPlan> MakePlan(const LoraMergeOptions& options, const PlanEnv& env);
  static absl::StatusOr<v1::JobResult> Produce(LoraMergeJobPlan& plan, const JobRun& run, JobContext& context);
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_JOB_H_
