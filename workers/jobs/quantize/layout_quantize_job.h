// The quantize job for the safetensors layouts of other ecosystems: bitsandbytes LLM.int8
// (bnb_int8), bitsandbytes 4-bit (bnb_nf4, bnb_fp4; block_size, double_quant), optimum-quanto
// (quanto_int8, quanto_int4; group_size) and ChatGLM weight-only (chatglm_int8, chatglm_int4).
// Kernels: workers/quant/{bitsandbytes,quanto,chatglm}.h; key layouts: formats.md §5-7.
//
// What gets quantized and the output tensors: layout_quantize_plan.h. An input that already
// holds a quantized layout is FAILED_PRECONDITION (ALREADY_QUANTIZED) unless allow_requantize;
// then each such weight is read back (quantized_weight_reader.h) with a REQUANTIZED warning.
//
// Output, a directory: "model.safetensors" ({"format": "pt"}; each quantized weight's data
// followed by its companions, in input order), "config.json" (the input's, with the
// quantization_config / quantization_bit the loaders need; a minimal one with a CONFIG_MISSING
// warning when the input has none), "quanto_qmap.json" for quanto, and the manifest last with
// the quality table.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_LAYOUT_QUANTIZE_JOB_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_LAYOUT_QUANTIZE_JOB_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/quantize/layout_quantize_plan.h"
#include "workers/jobs/core/job_context.h"

namespace modelsmith {

// A layout job's estimated peak memory: the chunk in flight, its companions, the writer's queue.
inline constexpr uint64_t kLayoutQuantizeJobMemoryBytes = 128 << 20;

// Field checks without I/O for a layout scheme: INVALID_ARGUMENT naming the field.
absl::Status ValidateLayoutQuantizeSpec(const v1::QuantizeSpec& spec);

// Writes the planned model to the spec's output directory (quantize_job.h's kind calls it).
absl::StatusOr<v1::JobResult> ProduceLayoutQuantize(LayoutPlan& plan, const JobRun& run, JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_LAYOUT_QUANTIZE_JOB_H_
