#include "workers/formats/diffusers_pipeline.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/formats/model_view.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

constexpr uint64_t kMaxIndexBytes = 1 << 20;

absl::Status IndexError(const std::string& key, absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, "PIPELINE_INDEX_INVALID",
                   absl::StrCat("model_index.json: ", key.empty() ? "" : absl::StrCat("'", key, "' "), message),
                   {{"field", key.empty() ? std::string("model_index.json") : key}});
}

// A component name is a folder name: no separators, no "." or "..", nothing hidden.
bool PlainName(const std::string& name) {
  return !name.empty() && name.size() <= 128 && name.front() != '.' &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                  c == '.';
         });
}

bool IsWeightFile(absl::string_view name) {
  for (const char* ext : {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}) {
    if (absl::EndsWith(name, ext)) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<bool> IsDiffusersPipeline(ObjectStore& store, const std::string& dir) {
  absl::StatusOr<uint64_t> size = store.SizeOf(JoinUri(dir, "model_index.json"));
  if (size.ok()) return true;
  if (absl::IsNotFound(size.status())) return false;
  return size.status();
}

absl::StatusOr<DiffusersPipeline> ReadDiffusersPipeline(ObjectStore& store, const std::string& dir) {
  DiffusersPipeline pipeline;
  pipeline.uri = dir;
  absl::StatusOr<std::optional<std::string>> text =
      ReadSmallObject(store, JoinUri(dir, "model_index.json"), kMaxIndexBytes, "PIPELINE_INDEX_INVALID");
  if (!text.ok()) return WithReason(text.status(), "PIPELINE_INDEX_INVALID", {{"field", "model_index.json"}});
  if (!*text) return IndexError("", "is missing");
  // Ordered: the components keep the order the file lists them in.
  pipeline.model_index = nlohmann::ordered_json::parse(**text, nullptr, /*allow_exceptions=*/false);
  if (pipeline.model_index.is_discarded() || !pipeline.model_index.is_object())
    return IndexError("", "is not a JSON object");
  absl::StatusOr<std::vector<ObjectEntry>> files = store.List(dir);
  if (!files.ok()) return files.status();
  std::sort(files->begin(), files->end(),
            [](const ObjectEntry& a, const ObjectEntry& b) { return a.relative_name < b.relative_name; });
  for (ObjectEntry& file : *files) {
    if (!store.IsStagingName(file.relative_name)) pipeline.files.push_back(std::move(file));
  }
  for (const auto& [key, value] : pipeline.model_index.items()) {
    if (key.empty() || key.front() == '_') continue;
    // Anything but a [library, class] pair is a setting of the pipeline itself (Kolors'
    // force_zeros_for_empty_prompt, SDXL's requires_aesthetics_score), not a component.
    if (!value.is_array() || value.size() != 2 || !(value[0].is_string() || value[0].is_null()) ||
        !(value[1].is_string() || value[1].is_null()))
      continue;
    if (value[0].is_null() || value[1].is_null()) continue;  // an optional component left out
    if (!PlainName(key)) return IndexError(key, "is not a plain folder name");
    PipelineComponent component{key, value[0].get<std::string>(), value[1].get<std::string>(), {}, false, "", 0};
    const std::string prefix = key + "/";
    for (const ObjectEntry& file : pipeline.files) {
      if (!absl::StartsWith(file.relative_name, prefix)) continue;
      ObjectEntry inside = file;
      inside.relative_name = file.relative_name.substr(prefix.size());
      if (IsWeightFile(inside.relative_name)) {
        component.has_weights = true;
        component.weight_bytes += file.size_bytes;
        if (component.stem.empty() || absl::StartsWith(inside.relative_name, "diffusion_pytorch_model"))
          component.stem =
              absl::StartsWith(inside.relative_name, "diffusion_pytorch_model") ? "diffusion_pytorch_model" : "model";
      }
      component.files.push_back(std::move(inside));
    }
    if (component.files.empty()) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "COMPONENT_MISSING",
                       absl::StrCat("model_index.json names component '", key, "' (", component.library, " ",
                                    component.type, ") but the pipeline has no '", key, "/' folder with files in it"),
                       {{"field", key}});
    }
    pipeline.components.push_back(std::move(component));
  }
  if (pipeline.components.empty()) return IndexError("", "names no components");
  return pipeline;
}

}  // namespace modelsmith
