// Which components of a diffusers pipeline a job runs, and each one's own spec (pipeline_job.h).
#ifndef MODELSMITH_WORKERS_JOBS_PIPELINE_COMPONENT_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_PIPELINE_COMPONENT_PLAN_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "modelsmith/v1/specs.pb.h"
#include "workers/formats/diffusers_pipeline.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

// The kind's input (a LoRA merge's base), output and overwrite, read through the spec's oneof
// (every kind names them alike): empty / false for a spec without a kind.
std::string InputOf(const v1::JobSpec& spec);
std::string OutputOf(const v1::JobSpec& spec);
bool OverwriteOf(const v1::JobSpec& spec);

// A component's own spec: the pipeline's, input its chosen weights (ChooseWeights with the spec's
// input_variant) inside `component_dir`, output `output` (overwrite set: it is staging), the
// component's file stem where the spec names none, for a LoRA merge the component, and its
// component_options merged in as JSON fields of the kind's spec: a value is taken as a JSON
// string first ("4" stays a string for max_shard_size), then as a literal (128, true, [..]).
// INVALID_ARGUMENT COMPONENT_OPTION_INVALID for an override of input, output, base, overwrite
// or component, or one the kind's spec has no field for; the weight choice's errors.
absl::StatusOr<v1::JobSpec> ComponentSpec(const v1::JobSpec& spec, const PipelineComponent& component,
                                          const std::string& component_dir, const std::string& output);

struct Selection {
  DiffusersPipeline pipeline;
  std::vector<const PipelineComponent*> selected;  // in model_index.json order
};

// Reads the pipeline at `uri` and picks the components the spec names (default: every one with
// weights). UNIMPLEMENTED PIPELINE_GGUF_UNSUPPORTED for a GGUF target; INVALID_ARGUMENT
// COMPONENT_UNKNOWN for a named or overridden component the pipeline lacks,
// COMPONENT_OPTION_INVALID for options of a component not processed; FAILED_PRECONDITION
// COMPONENT_HAS_NO_WEIGHTS; the reader's errors (diffusers_pipeline.h).
absl::StatusOr<Selection> SelectComponents(const v1::JobSpec& spec, ObjectStore& store, const std::string& uri);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_PIPELINE_COMPONENT_PLAN_H_
