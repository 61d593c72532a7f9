#include "workers/formats/quantized_layout.h"

#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "workers/tensor/ggml_types.h"

namespace modelsmith {
namespace {

constexpr char kBnb4StatePrefix[] = ".weight.quant_state.bitsandbytes__";

class Detector {
 public:
  explicit Detector(const std::vector<TensorInfo>& tensors) {
    for (const TensorInfo& t : tensors) by_name_[t.name] = &t;
  }

  const TensorInfo* Find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }

  // Adds a group of the tensors among `names` that exist; each tensor joins one group only.
  void Add(std::string module, std::string layout, const std::vector<std::string>& names) {
    QuantizedGroup group{std::move(module), std::move(layout), {}};
    for (const std::string& name : names) {
      if (Find(name) != nullptr && claimed_.insert(name).second) group.tensors.push_back(name);
    }
    if (!group.tensors.empty()) groups_.push_back(std::move(group));
  }

  bool Claimed(const std::string& name) const { return claimed_.contains(name); }
  std::vector<QuantizedGroup> Take() { return std::move(groups_); }

 private:
  std::map<std::string, const TensorInfo*> by_name_;
  std::set<std::string> claimed_;
  std::vector<QuantizedGroup> groups_;
};

std::string Strip(absl::string_view name, absl::string_view suffix) {
  return std::string(name.substr(0, name.size() - suffix.size()));
}

bool IsFp8(DType d) {
  return d == DType::kF8E4M3 || d == DType::kF8E5M2 || d == DType::kF8E4M3Fnuz || d == DType::kF8E5M2Fnuz;
}

}  // namespace

std::optional<int> ChatglmBitsFromConfig(const std::optional<nlohmann::json>& config) {
  if (!config || !config->contains("quantization_bit")) return std::nullopt;
  const nlohmann::json& bits = (*config)["quantization_bit"];
  if (!bits.is_number_integer()) return std::nullopt;
  const int value = bits.get<int>();
  return value == 4 || value == 8 ? std::optional<int>(value) : std::nullopt;
}

std::vector<QuantizedGroup> DetectQuantizedLayouts(const std::vector<TensorInfo>& tensors,
                                                   std::optional<int> chatglm_bits) {
  Detector d(tensors);
  for (const TensorInfo& t : tensors) {
    const size_t state = t.name.find(kBnb4StatePrefix);
    if (state != std::string::npos && state > 0) {
      const std::string m = t.name.substr(0, state);
      const std::string type = t.name.substr(state + sizeof(kBnb4StatePrefix) - 1);
      const std::string w = m + ".weight";
      d.Add(m, absl::StrCat("bnb_", type),
            {w, w + ".absmax", w + ".quant_map", w + ".nested_absmax", w + ".nested_quant_map", t.name});
    }
  }
  for (const TensorInfo& t : tensors) {
    if (absl::EndsWith(t.name, ".SCB") && !d.Claimed(t.name)) {
      const std::string m = Strip(t.name, ".SCB");
      d.Add(m, "bnb_int8", {m + ".weight", t.name, m + ".weight_format"});
    }
  }
  for (const TensorInfo& t : tensors) {
    if (!absl::EndsWith(t.name, ".weight._scale") || d.Claimed(t.name)) continue;
    const std::string m = Strip(t.name, ".weight._scale");
    const std::vector<std::string> companions = {t.name, m + ".weight._shift", m + ".input_scale", m + ".output_scale"};
    if (const TensorInfo* packed = d.Find(m + ".weight._data._data")) {
      // qint4 packs two rows per byte row, qint2 four: compare packed rows with scale rows.
      const uint64_t rows = t.shape.empty() ? 0 : t.shape.front();
      const uint64_t packed_rows = packed->shape.empty() ? 0 : packed->shape.front();
      const std::string layout =
          packed_rows != 0 && packed_rows == (rows + 3) / 4 && rows > 2 ? "quanto_qint2" : "quanto_qint4";
      std::vector<std::string> names = {packed->name};
      names.insert(names.end(), companions.begin(), companions.end());
      d.Add(m, layout, names);
    } else if (const TensorInfo* data = d.Find(m + ".weight._data")) {
      std::vector<std::string> names = {data->name};
      names.insert(names.end(), companions.begin(), companions.end());
      d.Add(m, IsFp8(data->dtype) ? "quanto_qfloat8" : "quanto_qint8", names);
    }
  }
  for (const TensorInfo& t : tensors) {
    if (!absl::EndsWith(t.name, ".weight_scale") || d.Claimed(t.name)) continue;
    const std::string m = Strip(t.name, ".weight_scale");
    const TensorInfo* weight = d.Find(m + ".weight");
    if (weight == nullptr || weight->dtype != DType::kI8) continue;
    std::string layout = "chatglm";
    if (chatglm_bits == 4 || chatglm_bits == 8) layout = absl::StrCat("chatglm_int", *chatglm_bits);
    d.Add(m, layout, {weight->name, t.name});
  }
  for (const TensorInfo& t : tensors) {
    if (d.Claimed(t.name)) continue;
    if (IsFp8(t.dtype)) {
      const bool e4m3 = t.dtype == DType::kF8E4M3 || t.dtype == DType::kF8E4M3Fnuz;
      d.Add(t.name, e4m3 ? "fp8_e4m3" : "fp8_e5m2", {t.name});
    } else if (t.ggml_type) {
      std::optional<GgmlTypeTraits> traits = GgmlTraits(*t.ggml_type);
      if (traits && traits->quantized) d.Add(t.name, std::string(traits->name), {t.name});
    }
  }
  return d.Take();
}

}  // namespace modelsmith
