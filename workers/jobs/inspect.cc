#include "workers/jobs/inspect.h"

#include <map>

#include "workers/common/error.h"
#include "workers/formats/model_view.h"
#include "workers/formats/quantized_layout.h"
#include "workers/tensor/ggml_types.h"

namespace modelsmith {

absl::StatusOr<v1::ModelInfo> InspectModel(const StorageRouter& router, absl::string_view uri) {
  absl::StatusOr<Location> location = router.Resolve(uri);
  if (!location.ok()) return WithReason(location.status(), ReasonOf(location.status()), {{"field", "uri"}});
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
  info.set_total_bytes(model->tensor_bytes);
  info.set_tensor_count(model->tensors.size());
  for (const auto& [key, value] : model->metadata) (*info.mutable_metadata())[key] = value;
  return info;
}

}  // namespace modelsmith
