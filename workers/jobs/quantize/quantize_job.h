// The quantize job. Layout schemes (bnb_*, quanto_*, chatglm_*) go to layout_quantize_job.h;
// this file runs the GGUF schemes: a safetensors (single or sharded) or GGUF (single or split)
// model into one GGUF file of a ggml type (Q8_0 ... Q6_K, F16, BF16, F32, or the Q4_K_M / Q5_K_M
// presets), or into parts of at most max_split_size as gguf-split writes them.
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

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/core/job_context.h"

namespace modelsmith {

absl::Status ValidateQuantizeSpec(const v1::QuantizeSpec& spec);
absl::StatusOr<uint64_t> PreflightQuantizeJob(const v1::QuantizeSpec& spec, const StorageRouter& router);
absl::StatusOr<v1::JobResult> RunQuantizeJob(const JobRun& run, JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_JOB_H_
