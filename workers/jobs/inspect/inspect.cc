#include "workers/jobs/inspect/inspect.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

#include "workers/common/error.h"
#include "workers/formats/adapter_keys.h"
#include "workers/formats/coreml_package.h"
#include "workers/formats/diffusers_pipeline.h"
#include "workers/formats/model_view.h"
#include "workers/jobs/inspect/inspect_coreml.h"
#include "workers/formats/quantized_layout.h"
#include "workers/storage/uri.h"
#include "workers/tensor/ggml_types.h"

namespace modelsmith {
namespace {

std::string Architecture(const ModelView& model, const std::optional<nlohmann::json>& config) {
  if (model.gguf) {
    const GgufKv* kv = model.gguf->Find("general.architecture");
    std::optional<std::string> text = kv ? kv->AsString() : std::nullopt;
    return text.value_or("");
  }
  if (!config) return "";
  if (auto it = config->find("architectures");
      it != config->end() && it->is_array() && !it->empty() && (*it)[0].is_string()) {
    return (*it)[0].get<std::string>();
  }
  if (auto it = config->find("model_type"); it != config->end() && it->is_string()) return it->get<std::string>();
  return "";
}

// What config.json tells a loader about a component's quantization.
std::string DeclaredQuantization(ObjectStore& store, const std::string& dir) {
  absl::StatusOr<std::optional<nlohmann::json>> config = ReadJsonObject(store, JoinUri(dir, "config.json"), 16 << 20);
  if (!config.ok() || !*config) return "";
  const nlohmann::json& c = **config;
  if (auto q = c.find("quantization_config"); q != c.end() && q->is_object()) {
    std::string method = q->value("quant_method", "");
    if (method == "bitsandbytes") {
      if (q->value("load_in_4bit", false))
        return absl::StrCat("bitsandbytes ", q->value("bnb_4bit_quant_type", "4bit"));
      if (q->value("load_in_8bit", false)) return "bitsandbytes int8";
    }
    return method;
  }
  if (auto bits = c.find("quantization_bit"); bits != c.end() && bits->is_number_integer())
    return absl::StrCat("chatglm_int", bits->get<int>());
  return "";
}

absl::StatusOr<v1::ModelInfo> InspectPipeline(const StorageRouter& router, const Location& location) {
  absl::StatusOr<DiffusersPipeline> pipeline = ReadDiffusersPipeline(*location.store, location.uri);
  if (!pipeline.ok()) return pipeline.status();
  v1::ModelInfo info;
  info.set_uri(location.uri);
  info.set_format("diffusers-pipeline");
  info.set_architecture(pipeline->model_index.value("_class_name", ""));
  for (const ObjectEntry& f : pipeline->files) {
    if (!location.store->IsStagingName(f.relative_name)) info.add_files(f.relative_name);
  }
  std::set<std::string> schemes;
  for (const PipelineComponent& c : pipeline->components) {
    v1::PipelineComponentInfo* out = info.add_components();
    out->set_name(c.name);
    out->set_library(c.library);
    out->set_class_name(c.type);
    for (const ObjectEntry& f : c.files) out->add_files(f.relative_name);
    for (const WeightSet& set : c.weight_sets) out->add_variants(set.variant);
    if (!c.has_weights()) continue;
    // What a job reads by default; the first copy when that is ambiguous.
    absl::StatusOr<const WeightSet*> chosen = ChooseWeights(c, "");
    const WeightSet& weights = chosen.ok() ? **chosen : c.weight_sets.front();
    const std::string dir = JoinUri(location.uri, c.name);
    out->set_weights(weights.entry);
    absl::StatusOr<v1::ModelInfo> component = InspectModel(router, JoinUri(dir, weights.entry));
    if (!component.ok()) return Annotate(component.status(), absl::StrCat("component '", c.name, "'"));
    out->set_format(component->format());
    std::set<std::string> dtypes;
    for (const v1::TensorDescriptor& t : component->tensors()) dtypes.insert(t.dtype());
    for (const std::string& d : dtypes) out->add_dtypes(d);
    out->set_total_bytes(component->total_bytes());
    out->set_tensor_count(component->tensor_count());
    out->set_quantization(component->quantization());
    out->set_architecture(component->architecture());
    out->set_declared_quantization(DeclaredQuantization(*location.store, dir));
    info.set_total_bytes(info.total_bytes() + component->total_bytes());
    info.set_tensor_count(info.tensor_count() + component->tensor_count());
    for (absl::string_view s : absl::StrSplit(component->quantization(), ',', absl::SkipEmpty()))
      schemes.insert(std::string(s));
  }
  info.set_quantization(absl::StrJoin(schemes, ","));
  return info;
}

}  // namespace

absl::StatusOr<v1::ModelInfo> InspectModel(const StorageRouter& router, absl::string_view uri) {
  absl::StatusOr<Location> location = router.Resolve(uri);
  if (!location.ok()) return WithReason(location.status(), ReasonOf(location.status()), {{"field", "uri"}});
  if (IsCoreMlInput(location->uri)) return InspectCoreMl(*location);
  absl::StatusOr<bool> pipeline = IsDiffusersPipeline(*location->store, location->uri);
  if (!pipeline.ok()) return pipeline.status();
  if (*pipeline) return InspectPipeline(router, *location);
  absl::StatusOr<ModelView> model = OpenModel(*location);
  if (!model.ok()) return model.status();
  absl::StatusOr<std::optional<nlohmann::json>> config = ReadModelConfig(*location->store, *model);
  if (!config.ok()) return config.status();
  const std::vector<QuantizedGroup> groups = DetectQuantizedLayouts(model->tensors, ChatglmBitsFromConfig(*config));
  std::map<std::string, std::string> layout_of;
  for (const QuantizedGroup& g : groups) {
    for (const std::string& name : g.tensors) layout_of[name] = g.layout;
  }
  v1::ModelInfo info;
  info.set_uri(model->uri);
  info.set_format(model->format);
  info.set_index_file(model->index_uri);
  for (const ModelFile& file : model->files) info.add_files(file.name);
  for (const TensorInfo& t : model->tensors) {
    v1::TensorDescriptor* d = info.add_tensors();
    d->set_name(t.name);
    std::optional<GgmlTypeTraits> ggml = t.ggml_type ? GgmlTraits(*t.ggml_type) : std::nullopt;
    d->set_dtype(ggml ? std::string(ggml->name) : std::string(DTypeName(t.dtype)));
    for (uint64_t dim : t.shape) d->add_shape(dim);
    d->set_size_bytes(t.size_bytes);
    d->set_file(model->files[t.file_index].name);
    d->set_data_offset(t.data_offset);
    if (auto it = layout_of.find(t.name); it != layout_of.end()) d->set_quantization(it->second);
  }
  for (const QuantizedGroup& g : groups) {
    v1::QuantizedModule* q = info.add_quantized();
    q->set_module(g.module);
    q->set_layout(g.layout);
    for (const std::string& name : g.tensors) q->add_tensors(name);
  }
  std::set<std::string> schemes;
  for (const QuantizedGroup& g : groups) schemes.insert(g.layout);
  for (const TensorInfo& t : model->tensors) {
    std::optional<GgmlTypeTraits> ggml = t.ggml_type ? GgmlTraits(*t.ggml_type) : std::nullopt;
    if (ggml && ggml->quantized) schemes.insert(std::string(ggml->name));
  }
  info.set_quantization(absl::StrJoin(schemes, ","));
  info.set_architecture(Architecture(*model, *config));
  for (const TensorAlias& a : model->aliases) {
    v1::TensorAlias* alias = info.add_aliases();
    alias->set_name(a.name);
    alias->set_target(a.target);
  }
  for (const std::string& s : model->skipped_entries) info.add_skipped_entries(s);
  const AdapterStyle adapter = DetectAdapterStyle(model->tensors);
  info.set_adapter_format(adapter.style);
  info.set_adapter_modules(adapter.modules);
  info.set_total_bytes(model->tensor_bytes);
  info.set_tensor_count(model->tensors.size());
  for (const auto& [key, value] : model->metadata) (*info.mutable_metadata())[key] = value;
  return info;
}

}  // namespace modelsmith
