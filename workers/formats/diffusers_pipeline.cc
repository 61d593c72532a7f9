#include "workers/formats/diffusers_pipeline.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

// "-00001-of-00002" at the end of `base`, as save_pretrained numbers shards.
bool HasShardSuffix(absl::string_view base) {
  constexpr absl::string_view kShape = "-00000-of-00000";
  if (base.size() <= kShape.size()) return false;
  const absl::string_view tail = base.substr(base.size() - kShape.size());
  for (size_t i = 0; i < kShape.size(); ++i) {
    if (kShape[i] == '0' ? !absl::ascii_isdigit(tail[i]) : tail[i] != kShape[i]) return false;
  }
  return true;
}

// "<stem>[.<variant>]" split at its first dot.
std::pair<std::string, std::string> StemAndVariant(absl::string_view base) {
  const size_t dot = base.find('.');
  if (dot == absl::string_view::npos) return {std::string(base), ""};
  return {std::string(base.substr(0, dot)), std::string(base.substr(dot + 1))};
}

// The weight sets among a component's top-level files.
std::vector<WeightSet> WeightSets(const std::vector<ObjectEntry>& files) {
  struct Found {
    WeightSet set;
    bool safetensors = false;
  };
  std::map<std::pair<std::string, std::string>, Found> sets;                          // by (stem, variant)
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t> shard_bytes;  // (stem, variant, ext)
  // transformers' "pytorch_model.bin" and "model.safetensors" are one copy in two formats.
  auto normal = [](const std::string& stem) {
    return absl::StartsWith(stem, "diffusion_pytorch_model") ? std::string("diffusion_pytorch_model")
                                                             : std::string("model");
  };
  auto add = [&](const std::string& stem, const std::string& variant, const std::string& entry, bool safetensors,
                 uint64_t bytes) {
    Found& found = sets[{normal(stem), variant}];
    if (!found.set.entry.empty() && found.safetensors && !safetensors) return;  // safetensors wins
    found.set = WeightSet{variant, entry, normal(stem), bytes};
    found.safetensors = safetensors;
  };
  for (const ObjectEntry& file : files) {
    const absl::string_view name = file.relative_name;
    if (!IsWeightFileName(name)) continue;
    for (const std::string ext : {".safetensors", ".bin"}) {
      const bool safetensors = ext == ".safetensors";
      const std::string index_marker = ext + ".index";
      // "<stem>.safetensors.index[.<variant>].json"
      if (const size_t at = name.find(index_marker); at != absl::string_view::npos && absl::EndsWith(name, ".json")) {
        absl::string_view rest = name.substr(at + index_marker.size());
        rest.remove_suffix(5);  // ".json"
        if (rest.empty() || rest.front() == '.')
          add(std::string(name.substr(0, at)), std::string(rest.empty() ? rest : rest.substr(1)), std::string(name),
              safetensors, 0);
        break;
      }
      if (!absl::EndsWith(name, ext)) continue;
      const absl::string_view base = name.substr(0, name.size() - ext.size());
      if (HasShardSuffix(base)) {
        const auto [stem, variant] = StemAndVariant(base.substr(0, base.size() - 15));
        shard_bytes[{normal(stem), variant, ext}] += file.size_bytes;
      } else {
        const auto [stem, variant] = StemAndVariant(base);
        add(stem, variant, std::string(name), safetensors, file.size_bytes);
      }
      break;
    }
  }
  std::vector<WeightSet> out;
  for (auto& [key, found] : sets) {
    if (absl::EndsWith(found.set.entry, ".json"))
      found.set.bytes = shard_bytes[{key.first, key.second, found.safetensors ? ".safetensors" : ".bin"}];
    out.push_back(std::move(found.set));
  }
  std::stable_sort(out.begin(), out.end(), [](const WeightSet& a, const WeightSet& b) {
    return std::make_pair(!a.variant.empty(), a.variant) < std::make_pair(!b.variant.empty(), b.variant);
  });
  return out;
}

std::string Variants(const PipelineComponent& component) {
  std::vector<std::string> names;
  for (const WeightSet& set : component.weight_sets) names.push_back(set.variant.empty() ? "(plain)" : set.variant);
  return absl::StrJoin(names, ", ");
}

}  // namespace

bool IsWeightFileName(absl::string_view name) {
  if (name.find('/') != absl::string_view::npos) return false;
  for (const char* ext : {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}) {
    if (absl::EndsWith(name, ext)) return true;
  }
  return absl::EndsWith(name, ".json") &&
         (absl::StrContains(name, ".safetensors.index") || absl::StrContains(name, ".bin.index"));
}

absl::StatusOr<const WeightSet*> ChooseWeights(const PipelineComponent& component, const std::string& variant) {
  if (component.weight_sets.empty()) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "COMPONENT_HAS_NO_WEIGHTS",
                     absl::StrCat("component '", component.name, "' (", component.type, ") holds no weight files"),
                     {{"field", component.name}});
  }
  for (const WeightSet& set : component.weight_sets) {
    if (set.variant == variant) return &set;
  }
  if (!variant.empty()) {
    return MakeError(
        absl::StatusCode::kFailedPrecondition, "COMPONENT_VARIANT_MISSING",
        absl::StrCat("component '", component.name, "' has no '", variant, "' weights; it has ", Variants(component)),
        {{"field", component.name}});
  }
  if (component.weight_sets.size() > 1) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "COMPONENT_VARIANT_AMBIGUOUS",
                     absl::StrCat("component '", component.name, "' has no plain weights but several variants (",
                                  Variants(component), "); name the one to read with input_variant"),
                     {{"field", component.name}});
  }
  return &component.weight_sets.front();
}

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
    PipelineComponent component{key, value[0].get<std::string>(), value[1].get<std::string>(), {}, {}};
    const std::string prefix = key + "/";
    for (const ObjectEntry& file : pipeline.files) {
      if (!absl::StartsWith(file.relative_name, prefix)) continue;
      ObjectEntry inside = file;
      inside.relative_name = file.relative_name.substr(prefix.size());
      component.files.push_back(std::move(inside));
    }
    component.weight_sets = WeightSets(component.files);
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
