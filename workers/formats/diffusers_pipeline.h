// A diffusers pipeline directory: model_index.json and one folder per component.
//
// model_index.json maps each component name to [library, class] ("unet": ["diffusers",
// "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"]); keys starting
// with "_" (_class_name, _diffusers_version, _name_or_path) and values that are not such a pair
// (Kolors' force_zeros_for_empty_prompt) are the pipeline's own, and a [null, null] entry is an
// optional component the pipeline does without. Every other component
// must have its folder. A component "has weights" when its folder holds a .safetensors, .bin,
// .pt, .pth or .ckpt file; its weight stem is "diffusion_pytorch_model" (diffusers models) or
// "model" (transformers models, as their save_pretrained names them).
#ifndef MODELSMITH_WORKERS_FORMATS_DIFFUSERS_PIPELINE_H_
#define MODELSMITH_WORKERS_FORMATS_DIFFUSERS_PIPELINE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "workers/storage/object_store.h"

namespace modelsmith {

struct PipelineComponent {
  std::string name;                // "unet", "text_encoder_2", ...
  std::string library;             // "diffusers", "transformers", ...
  std::string type;                // the class: "UNet2DConditionModel"
  std::vector<ObjectEntry> files;  // under "<name>/", relative names inside the component
  bool has_weights = false;
  std::string stem;  // of its weight files; empty without weights
  uint64_t weight_bytes = 0;
};

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
