// The convert job's GGUF target: a Hugging Face checkpoint of the Llama family (safetensors or
// torch) to one llama.cpp GGUF file (hf_to_gguf.h has the mapping).
//
// Types: --dtype f32, f16, bf16 or any GGUF block type the quantize kernels encode (Q8_0, Q4_K,
// ...); unset, BF16 weights give BF16 and others F16 (the converter's "auto"). 1-D tensors are F32.
// Tensors stream in chunks of whole rows: read (Q/K rows in llama.cpp's order), decoded to F32,
// encoded on the compute threads, written with the writer thread comparing every byte it wrote;
// the header and tensor table are re-read before the file is renamed into place; the manifest,
// "<file>.manifest.json", is written last.
#ifndef MODELSMITH_WORKERS_JOBS_CONVERT_CONVERT_GGUF_JOB_H_
#define MODELSMITH_WORKERS_JOBS_CONVERT_CONVERT_GGUF_JOB_H_

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/core/job_context.h"

namespace modelsmith {

// Field checks for the GGUF target (output name, dtype, options that do not apply).
absl::Status ValidateConvertToGguf(const v1::ConvertSpec& spec);
absl::StatusOr<uint64_t> PreflightConvertToGguf(const v1::ConvertSpec& spec, const StorageRouter& router);
absl::StatusOr<v1::JobResult> RunConvertToGguf(const JobRun& run, JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CONVERT_CONVERT_GGUF_JOB_H_
