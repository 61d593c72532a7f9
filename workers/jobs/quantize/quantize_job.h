// The quantize job. Layout schemes (bnb_*, quanto_*, chatglm_*) go to layout_quantize_job.h;
// this file runs the GGUF schemes: a safetensors (single or sharded) or GGUF (single or split)
// model into one GGUF file of a ggml type (Q8_0 ... Q6_K, F16, BF16, F32, or llama.cpp's
// Q3_K_S ... Q5_K_M presets), or into parts of at most max_split_size as gguf-split writes them.
//
// plan: open the input headers, decide each tensor's type (quantize_plan.h); an input that is
//   already quantized (a GGUF type, or a bitsandbytes / quanto / ChatGLM / fp8 layout) is refused
//   (FAILED_PRECONDITION, ALREADY_QUANTIZED) unless allow_requantize, and then every such weight is
//   read back as floats (quantized_weight_reader.h) with a REQUANTIZED warning;
// execute: per output file, the GGUF header (KV metadata copied from a GGUF input,
//   general.file_type and general.quantization_version set, split.* keys for parts), then each
//   tensor: unchanged bytes where the type stays, else rows in chunks of 4M elements, cut into
//   parts quantized on every core, decoded again for the quality figures (RMSE, max |error|,
//   SNR); warnings for non-finite values and SNR under the threshold;
// verify: re-open each file, check its header, tensor table and size; the SHA-256 comes from the
//   writer re-reading the file as it wrote it (publication.h);
// publish: the file(s), staged until every part is verified, then "<output>.manifest.json" with
//   the full quality table (publication.h). A failed or cancelled job leaves nothing of its own and
//   a previous output whole.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_JOB_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_JOB_H_

#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/job_kind.h"
#include "workers/jobs/quantize/layout_quantize_plan.h"
#include "workers/jobs/quantize/quantize_plan.h"

namespace modelsmith {

struct QuantizeOptions {
  v1::QuantizeSpec spec;                   // validated
  bool layout = false;                     // a safetensors layout scheme (layout_quantize_job.h)
  std::optional<QuantizePlanner> planner;  // GGUF schemes: patterns compiled, scheme resolved
  uint64_t max_split_bytes = 0;            // GGUF schemes: 0 writes one file
};

struct GgufQuantizePlan;  // quantize_job.cc
struct QuantizeJobPlan {
  std::shared_ptr<GgufQuantizePlan> gguf;  // one of the two is set
  std::shared_ptr<LayoutPlan> layout;
  uint64_t estimated_peak_bytes = 0;
};

// The job kind (core/job_kind.h has the contract of each function). Parse: INVALID_ARGUMENT for a
// missing input or output, an unknown scheme or type, a bad pattern, size or output name. MakePlan:
// the input opened (safetensors or GGUF; a torch checkpoint is UNSUPPORTED_FORMAT), every tensor's
// type decided (ALREADY_QUANTIZED unless allow_requantize), the output file(s) vacant.
class QuantizeJob {
 public:
  using Options = QuantizeOptions;
  using Plan = QuantizeJobPlan;
  static absl::StatusOr<QuantizeOptions> Parse(const v1::JobSpec& spec);
  static absl::StatusOr<QuantizeJobPlan> MakePlan(const QuantizeOptions& options, const PlanEnv& env);
  static absl::StatusOr<v1::JobResult> Produce(QuantizeJobPlan& plan, const JobRun& run, JobContext& context);
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_JOB_H_
