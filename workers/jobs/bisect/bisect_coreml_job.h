// The bisect job on a Core ML ML Program (an ".mlpackage" input): coreml_bisect_plan.h decides
// the cuts; this writes the chunk packages.
//
// execute: per chunk "<stem>-chunk<k>-of-<N>.mlpackage": Data/com.apple.CoreML/model.mlmodel (the
//   chunk program, serialized deterministically) and .../weights/weight.bin holding only the
//   blobs the chunk reads, in the order its ops first refer to them, each re-offset (coremltools'
//   layout: 64-byte header, each record 64-aligned and followed by its data) with its bytes copied
//   unchanged from the original's weight file. With `pipeline`, instead one
//   "<stem>-pipeline-of-<N>.mlpackage" whose model is a Pipeline of the chunk programs, chunk i
//   (from 0) reading "@model_path/weights/<i>-weight.bin", as coremltools' make_pipeline writes it.
// verify: every weight file read back whole (its records exactly the planned ones); every model
//   read back and checked by VerifyMilProgram against its weight files; each chunk's crossing
//   inputs matching an earlier chunk's outputs by name, dtype and shape.
// publish: the models and weights, then each package's Manifest.json (identifiers derived from
//   the SHA-256 of its model and weight file, so the same input gives the same bytes), then
//   "<stem>.chunks.json" (per chunk: files, stored bytes, inputs, outputs, crossing values, ops,
//   and what a program-order count would have split), then the manifest.
#ifndef MODELSMITH_WORKERS_JOBS_BISECT_BISECT_COREML_JOB_H_
#define MODELSMITH_WORKERS_JOBS_BISECT_BISECT_COREML_JOB_H_

#include <memory>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/job_kind.h"

namespace modelsmith {

// The package opened and indexed, the cuts decided, the output checked vacant.
struct CoreMlBisectJobPlan;
absl::StatusOr<std::shared_ptr<CoreMlBisectJobPlan>> MakeCoreMlBisectPlan(const v1::BisectSpec& spec, size_t chunks,
                                                                          const PlanEnv& env,
                                                                          uint64_t* estimated_peak_bytes);

absl::StatusOr<v1::JobResult> ProduceCoreMlBisect(CoreMlBisectJobPlan& plan, const JobRun& run, JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_BISECT_BISECT_COREML_JOB_H_
