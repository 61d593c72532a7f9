// The quantize job, GGUF schemes: a safetensors (single or sharded) or GGUF model into one GGUF
// file of a ggml type (Q8_0 ... Q6_K, F16, BF16, F32), tensor by tensor in bounded memory.
//
// plan: open the input headers, decide each tensor's type (quantize_plan.h); a GGUF input that is
//   already quantized is refused (FAILED_PRECONDITION, ALREADY_QUANTIZED) unless
//   allow_requantize, and then every such tensor is dequantized with a REQUANTIZED warning;
// execute: write the GGUF header (KV metadata copied from a GGUF input, general.file_type and
//   general.quantization_version set), then each tensor: unchanged bytes where the type stays,
//   else rows in chunks of about 16 MiB decoded to F32, encoded, decoded again for the quality
//   figures (RMSE, max |error|, SNR), warnings for non-finite values and SNR under the threshold;
// verify: re-read the written header and tensor table, SHA-256;
// publish: the GGUF file, then "<file>.manifest.json" with the full quality table.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_JOB_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_JOB_H_

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/job_context.h"

namespace modelsmith {

absl::Status ValidateQuantizeSpec(const v1::QuantizeSpec& spec);
absl::StatusOr<uint64_t> PreflightQuantizeJob(const v1::QuantizeSpec& spec, const StorageRouter& router);
absl::StatusOr<v1::JobResult> RunQuantizeJob(const JobRun& run, JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_JOB_H_
