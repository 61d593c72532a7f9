// The bisect job on an ONNX graph (a ".onnx" input): onnx_bisect_plan.h decides the cuts; this
// writes the chunks.
//
// execute: per chunk "<stem>-chunk<k>-of-<N>.onnx", a valid model whose inputs are the graph
//   inputs it reads and the tensors earlier chunks pass it, and whose outputs are the tensors later
//   chunks read and the graph outputs it makes. Its initializers go to "<chunk file>.data" as
//   external data (4096-aligned ranges, onnx's layout) when the input kept any as external data or
//   the chunk holds over 1 GiB; they stay inline otherwise. External bytes are copied from the
//   input's data files by range.
// verify: each written model parses back with its planned nodes, inputs and outputs; a data file
//   has its planned size; every range is re-read and compared as it is written.
// publish: the chunks, then "<stem>.chunks.json" (per chunk in run order: files, stored bytes,
//   inputs and outputs, the tensors crossing in), then the manifest.
#ifndef MODELSMITH_WORKERS_JOBS_BISECT_BISECT_ONNX_JOB_H_
#define MODELSMITH_WORKERS_JOBS_BISECT_BISECT_ONNX_JOB_H_

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include <memory>

#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/job_kind.h"

namespace modelsmith {

// True when the bisect input names an ONNX model.
bool IsOnnxInput(absl::string_view uri);

// The ONNX input opened, its types inferred, the cuts decided, the output checked vacant.
struct OnnxBisectJobPlan;
absl::StatusOr<std::shared_ptr<OnnxBisectJobPlan>> MakeOnnxBisectPlan(const v1::BisectSpec& spec, size_t chunks,
                                                                      const PlanEnv& env,
                                                                      uint64_t* estimated_peak_bytes);

// Writes the planned chunk models, their external data and the chunk index.
absl::StatusOr<v1::JobResult> ProduceOnnxBisect(OnnxBisectJobPlan& plan, const JobRun& run, JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_BISECT_BISECT_ONNX_JOB_H_
