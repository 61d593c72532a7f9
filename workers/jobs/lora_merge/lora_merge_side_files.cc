#include "workers/jobs/lora_merge/lora_merge_side_files.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "workers/common/error.h"
#include "workers/jobs/lora_merge/lora_merge_files.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/publication.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

constexpr const char* kWeightSuffixes[] = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx"};

bool IsWeightFile(absl::string_view name) {
  for (const char* suffix : kWeightSuffixes) {
    if (absl::EndsWith(name, suffix)) return true;
  }
  return false;
}

// The size is the object's own, not the listing's, which may be stale.
absl::StatusOr<std::string> ReadObject(ObjectStore& store, const std::string& uri) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(uri);
  if (!object.ok()) return object.status();
  const uint64_t size = (*object)->size_bytes();
  if (size > kSideFileMaxBytes) {
    return MakeError(absl::StatusCode::kInvalidArgument, "MODEL_CONFIG_INVALID",
                     absl::StrCat("'", uri, "' is larger than 64 MiB"), {{"file", uri}});
  }
  std::string bytes(size, '\0');
  if (absl::Status s = (*object)->ReadAt(0, size, reinterpret_cast<std::byte*>(bytes.data())); !s.ok()) return s;
  return bytes;
}

absl::StatusOr<ordered_json> ParseObject(const std::string& bytes, const std::string& name) {
  ordered_json value = ordered_json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (!value.is_object()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "MODEL_CONFIG_INVALID",
                     absl::StrCat("'", name, "' is not a JSON object"), {{"file", name}});
  }
  return value;
}

// The modules whose weights a DEQUANTIZE merge wrote as floats, by layout.
std::map<std::string, std::vector<std::string>> DequantizedModules(const LoraMergePlan& plan) {
  std::map<std::string, std::vector<std::string>> modules;
  for (const auto& [index, m] : plan.merged) {
    if (!m.dequantize_to || m.reader == nullptr) continue;
    const std::string& name = m.reader->name();
    modules[m.type].push_back(absl::EndsWith(name, ".weight") ? name.substr(0, name.size() - 7) : name);
  }
  return modules;
}

absl::StatusOr<std::string> RewrittenIndex(const LoraMergePlan& plan, const std::string& bytes,
                                           const std::string& name) {
  absl::StatusOr<ordered_json> index = ParseObject(bytes, name);
  if (!index.ok()) return index.status();
  ordered_json weight_map = ordered_json::object();
  uint64_t total = 0;
  for (const auto& [tensor, written] : WrittenTensors(plan)) {
    weight_map[tensor] = plan.base.files[written.file_index].name;
    total += written.size_bytes;
  }
  if (!(*index)["metadata"].is_object()) (*index)["metadata"] = ordered_json::object();
  (*index)["metadata"]["total_size"] = total;
  (*index)["weight_map"] = std::move(weight_map);
  return index->dump(2) + "\n";
}

absl::StatusOr<std::string> RewrittenConfig(const std::string& bytes, const std::vector<std::string>& bnb_modules) {
  absl::StatusOr<ordered_json> config = ParseObject(bytes, "config.json");
  if (!config.ok()) return config.status();
  ordered_json& q = (*config)["quantization_config"];
  if (!q.is_object()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "MODEL_CONFIG_INVALID",
                     "config.json has no quantization_config object for the bitsandbytes weights",
                     {{"file", "config.json"}});
  }
  ordered_json& skip = q["llm_int8_skip_modules"];
  if (!skip.is_array()) skip = ordered_json::array({"lm_head"});
  std::set<std::string> present;
  for (const ordered_json& v : skip) {
    if (v.is_string()) present.insert(v.get<std::string>());
  }
  for (const std::string& module : bnb_modules) {
    if (present.insert(module).second) skip.push_back(module);
  }
  return config->dump(2) + "\n";
}

absl::StatusOr<std::string> RewrittenQmap(const std::string& bytes, const std::vector<std::string>& quanto_modules) {
  absl::StatusOr<ordered_json> qmap = ParseObject(bytes, "quanto_qmap.json");
  if (!qmap.ok()) return qmap.status();
  for (const std::string& module : quanto_modules) qmap->erase(module);
  return qmap->dump(4);
}

}  // namespace

absl::StatusOr<std::vector<SideFile>> MakeSideFiles(const LoraMergePlan& plan, ObjectStore& base_store,
                                                    JobContext& context) {
  const std::string directory = std::string(ParentUri(plan.base.files.front().uri));
  absl::StatusOr<std::vector<ObjectEntry>> entries = base_store.List(directory);
  if (!entries.ok()) return entries.status();
  std::set<std::string> model_files;
  for (const ModelFile& f : plan.base.files) model_files.insert(f.name);
  const std::string index_name = plan.base.index_uri.empty() ? "" : std::string(BaseName(plan.base.index_uri));
  const std::map<std::string, std::vector<std::string>> dequantized = DequantizedModules(plan);
  std::vector<std::string> bnb_modules, quanto_modules;
  for (const auto& [layout, modules] : dequantized) {
    auto& into = absl::StartsWith(layout, "bnb") ? bnb_modules : quanto_modules;
    into.insert(into.end(), modules.begin(), modules.end());
  }
  const bool rewritten = !plan.rewritten_files.empty();

  std::vector<SideFile> files;
  std::vector<std::string> left;
  for (const ObjectEntry& e : *entries) {
    const std::string& name = e.relative_name;
    if (model_files.count(name)) continue;
    if (name.find('/') != std::string::npos || name == kManifestName || (IsWeightFile(name) && name != index_name) ||
        e.size_bytes > kSideFileMaxBytes) {
      left.push_back(name);
      continue;
    }
    absl::StatusOr<std::string> bytes = ReadObject(base_store, e.uri);
    if (!bytes.ok()) return bytes.status();
    SideFile file{name, *std::move(bytes), "file"};
    if (name == index_name) {
      file.role = "index";
      if (rewritten) {
        absl::StatusOr<std::string> index = RewrittenIndex(plan, file.bytes, name);
        if (!index.ok()) return index.status();
        file.bytes = *std::move(index);
      }
    } else if (name == "config.json") {
      file.role = "config";
      if (!bnb_modules.empty()) {
        absl::StatusOr<std::string> config = RewrittenConfig(file.bytes, bnb_modules);
        if (!config.ok()) return config.status();
        file.bytes = *std::move(config);
      }
    } else if (name == "quanto_qmap.json" && !quanto_modules.empty()) {
      absl::StatusOr<std::string> qmap = RewrittenQmap(file.bytes, quanto_modules);
      if (!qmap.ok()) return qmap.status();
      file.bytes = *std::move(qmap);
    }
    files.push_back(std::move(file));
  }
  if (!left.empty()) {
    context.Log(absl::StrCat(
        "not copied from the base's directory (subdirectories, other weight files, a manifest, files over 64 MiB): ",
        absl::StrJoin(left, ", ")));
  }
  return files;
}

}  // namespace modelsmith
