// Any job kind over a diffusers pipeline (formats/diffusers_pipeline.h): the input a directory
// with model_index.json, the output a complete pipeline directory.
//
// Each selected component (JobSpec.components, default every component with weights) runs as its
// own job of the same kind, input "<pipeline>/<component>", output a hidden staging folder
// inside the output ("<output>/.modelsmith-pipeline-<job>/<component>"), with the spec's
// per-component overrides (JobSpec.component_options: JSON fields merged into the kind's spec)
// and, where the spec leaves them empty, the component's own file stem (diffusers'
// "diffusion_pytorch_model" or transformers' "model") and, for a LoRA merge, the component whose
// adapter modules apply. Then one Publication writes the output: every processed component's
// files, every other file of the pipeline byte for byte (model_index.json, configs, scheduler,
// tokenizer, unselected components; a processed component's own non-weight files unless its
// job wrote the same name), and one manifest listing all of them with the components' figures.
// Either the whole pipeline is published or nothing: a component that fails stops the job, its
// error names the component, and the staging folder is removed.
//
// Refusals: UNIMPLEMENTED PIPELINE_GGUF_UNSUPPORTED (a GGUF target: one file, not a pipeline);
// INVALID_ARGUMENT COMPONENT_UNKNOWN (a named or overridden component the pipeline
// lacks), COMPONENT_OPTION_INVALID (an override of input, output, base or overwrite, or one the
// kind's spec has no field for); FAILED_PRECONDITION COMPONENT_HAS_NO_WEIGHTS,
// COMPONENT_MISSING (formats/diffusers_pipeline.h).
#ifndef MODELSMITH_WORKERS_JOBS_PIPELINE_PIPELINE_JOB_H_
#define MODELSMITH_WORKERS_JOBS_PIPELINE_PIPELINE_JOB_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/core/job_context.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

// What the pipeline driver needs of the kind it runs per component (job_kinds.h's entry).
struct PipelineKind {
  absl::string_view name;          // "convert"
  absl::string_view output_field;  // "convert.output"
  std::function<absl::StatusOr<uint64_t>(const v1::JobSpec&)> preflight;
  std::function<absl::StatusOr<v1::JobResult>(const JobRun&, JobContext&)> run;
};

// The pipeline directory the spec's input names (convert/quantize/shard/bisect input, lora_merge
// base), or nullopt when it is not one. Errors of the store pass through.
absl::StatusOr<std::optional<std::string>> PipelineInput(const v1::JobSpec& spec, const StorageRouter& router);

// Field checks of components and component_options without I/O.
absl::Status ValidatePipelineFields(const v1::JobSpec& spec);

// Submit-time checks: the pipeline read, the components resolved, the output vacant, and each
// component's own preflight; the largest component estimate.
absl::StatusOr<uint64_t> PreflightPipeline(const v1::JobSpec& spec, const std::string& pipeline_uri,
                                           const StorageRouter& router, const PipelineKind& kind);

// Runs it (above).
absl::StatusOr<v1::JobResult> RunPipeline(const JobRun& run, JobContext& context, const std::string& pipeline_uri,
                                          const PipelineKind& kind);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_PIPELINE_PIPELINE_JOB_H_
