// A diffusers pipeline directory: model_index.json and one folder per component.
//
// model_index.json maps each component name to [library, class] ("unet": ["diffusers",
// "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"]); keys starting
// with "_" (_class_name, _diffusers_version, _name_or_path) and values that are not such a pair
// (Kolors' force_zeros_for_empty_prompt) are the pipeline's own, and a [null, null] entry is an
// optional component the pipeline does without. Every other component
// must have its folder. A component "has weights" when its folder holds .safetensors or .bin
// weight files (WeightSet below).
#ifndef MODELSMITH_WORKERS_FORMATS_DIFFUSERS_PIPELINE_H_
#define MODELSMITH_WORKERS_FORMATS_DIFFUSERS_PIPELINE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "workers/storage/object_store.h"

namespace modelsmith {

// One saved copy of a component's weights: the plain files or one variant of them, as diffusers
// names them ("<stem>[.<variant>].safetensors", or "<stem>[.<variant>]-0000N-of-0000M.safetensors"
// with "<stem>.safetensors.index[.<variant>].json"; likewise .bin). Hub repositories often hold
// several (SDXL's unet has the plain and the fp16 files); safetensors wins over .bin of the same one.
struct WeightSet {
  std::string variant;  // "" for the plain files
  std::string entry;    // the file or index to open, relative to the component folder
  std::string stem;     // "diffusion_pytorch_model" (diffusers models) or "model" (transformers')
  uint64_t bytes = 0;   // of its files
};

struct PipelineComponent {
  std::string name;                    // "unet", "text_encoder_2", ...
  std::string library;                 // "diffusers", "transformers", ...
  std::string type;                    // the class: "UNet2DConditionModel"
  std::vector<ObjectEntry> files;      // under "<name>/", relative names inside the component
  std::vector<WeightSet> weight_sets;  // by variant, the plain files first
  bool has_weights() const { return !weight_sets.empty(); }
};

// True for a component's own weight file or weight index (a top-level name inside its folder):
// ".safetensors", ".bin", ".pt", ".pth", ".ckpt", "*.safetensors.index*.json", "*.bin.index*.json".
bool IsWeightFileName(absl::string_view name);

// The weights a job reads: those of `variant` when one is asked for (FAILED_PRECONDITION
// COMPONENT_VARIANT_MISSING naming the component and the variants it has), else the plain files
// as diffusers loads by default, else the only variant there is (COMPONENT_VARIANT_AMBIGUOUS when
// several). FAILED_PRECONDITION COMPONENT_HAS_NO_WEIGHTS for a component without any.
absl::StatusOr<const WeightSet*> ChooseWeights(const PipelineComponent& component, const std::string& variant);

struct DiffusersPipeline {
  std::string uri;  // the directory
  nlohmann::ordered_json model_index;
  std::vector<PipelineComponent> components;  // in model_index.json order, [null, null] left out
  std::vector<ObjectEntry> files;             // every file of the directory (staging objects left out), relative names
};

// True when `dir` holds a model_index.json (the object exists); errors of the store pass through.
absl::StatusOr<bool> IsDiffusersPipeline(ObjectStore& store, const std::string& dir);

// Reads the pipeline at `dir`. INVALID_ARGUMENT PIPELINE_INDEX_INVALID naming the key for a
// model_index.json that is not a JSON object or names no component (or a component name that is
// not a plain folder name); FAILED_PRECONDITION COMPONENT_MISSING naming the component whose
// folder is absent or empty.
absl::StatusOr<DiffusersPipeline> ReadDiffusersPipeline(ObjectStore& store, const std::string& dir);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_DIFFUSERS_PIPELINE_H_
