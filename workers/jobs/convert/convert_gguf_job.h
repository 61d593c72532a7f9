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
#include <memory>

#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/job_kind.h"

namespace modelsmith {

// Field checks for the GGUF target (output name, dtype, options that do not apply).
// A GGUF target job's estimated peak memory: a chunk of rows in flight and the writer's queue.
inline constexpr uint64_t kConvertGgufJobMemoryBytes = 256 << 20;

// Field checks without I/O for the GGUF target: INVALID_ARGUMENT naming the convert.* field.
absl::Status ValidateConvertToGguf(const v1::ConvertSpec& spec);

// The input opened and mapped to llama.cpp's names and types, the output file checked vacant.
struct ConvertGgufPlan;
absl::StatusOr<std::shared_ptr<ConvertGgufPlan>> MakeConvertGgufPlan(const v1::ConvertSpec& spec, const PlanEnv& env);

// Writes the planned GGUF file and its manifest.
absl::StatusOr<v1::JobResult> ProduceConvertGguf(ConvertGgufPlan& plan, const JobRun& run, JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CONVERT_CONVERT_GGUF_JOB_H_
