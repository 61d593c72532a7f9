#include "workers/jobs/quantize/layout_quantize_plan.h"

#include <cstring>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "workers/common/error.h"
#include "workers/jobs/quantize/quantize_report.h"
#include "workers/formats/quantized_layout.h"
#include "workers/formats/quantized_weight_reader.h"
#include "workers/quant/bitsandbytes.h"
#include "workers/quant/quanto.h"

namespace modelsmith {
namespace {

// Modules that bitsandbytes, quanto and diffusers leave alone: embeddings and the output head.
const Pattern& EmbeddingOrHead() {
  static const Pattern pattern = *Pattern::Compile(
      R"((^|.*\.)(embed_tokens|embed_positions|embed_in|embed_out|wte|wpe|word_embeddings|position_embeddings|)"
      R"(token_embedding|tok_embeddings|embeddings|embedding|lm_head|output_layer)(\..*)?)",
      "layout");
  return pattern;
}

// The outputs of a quantized weight, the data tensor first; every size is known before any data
// is read, so the header can be written first.
std::vector<SafetensorsEntry> QuantizedOutputs(const LayoutSpec& spec, const LayoutTensorPlan& t,
                                               uint64_t quant_state_bytes) {
  const std::string& m = t.module;
  const uint64_t n = t.rows * t.cols;
  const DType scale_dtype = DTypeOf(t.stored);
  const uint64_t scale_bytes = t.stored == StoredFloat::kF32 ? 4 : 2;
  switch (spec.layout) {
    case Layout::kBnbInt8:
      return {{m + ".weight", DType::kI8, {t.rows, t.cols}, n},
              {m + ".SCB", DType::kF32, {t.rows}, t.rows * 4},
              {m + ".weight_format", DType::kU8, {}, 1}};
    case Layout::kBnbNf4:
    case Layout::kBnbFp4: {
      const uint64_t blocks = (n + spec.bnb_block - 1) / spec.bnb_block;
      const std::string w = m + ".weight";
      std::vector<SafetensorsEntry> out = {{w, DType::kU8, {(n + 1) / 2, 1}, (n + 1) / 2}};
      if (spec.double_quant) {
        const uint64_t nested = (blocks + kBnbNestedBlock - 1) / kBnbNestedBlock;
        out.push_back({w + ".absmax", DType::kU8, {blocks}, blocks});
        out.push_back({w + ".quant_map", DType::kF32, {16}, 64});
        out.push_back({w + ".nested_absmax", DType::kF32, {nested}, nested * 4});
        out.push_back({w + ".nested_quant_map", DType::kF32, {256}, 1024});
      } else {
        out.push_back({w + ".absmax", DType::kF32, {blocks}, blocks * 4});
        out.push_back({w + ".quant_map", DType::kF32, {16}, 64});
      }
      const std::string state =
          absl::StrCat(w, ".quant_state.bitsandbytes__", spec.layout == Layout::kBnbNf4 ? "nf4" : "fp4");
      out.push_back({state, DType::kU8, {quant_state_bytes}, quant_state_bytes});
      return out;
    }
    case Layout::kQuantoInt8:
      return {{m + ".weight._data", DType::kI8, {t.rows, t.cols}, n},
              {m + ".weight._scale", scale_dtype, {t.rows, 1}, t.rows * scale_bytes},
              {m + ".input_scale", scale_dtype, {}, scale_bytes},
              {m + ".output_scale", scale_dtype, {}, scale_bytes}};
    case Layout::kQuantoInt4: {
      const uint64_t groups = n / t.group;
      const uint64_t packed_rows = (groups + 1) / 2;
      return {{m + ".weight._data._data", DType::kU8, {packed_rows, t.group}, packed_rows * t.group},
              {m + ".weight._scale", scale_dtype, {groups, 1}, groups * scale_bytes},
              {m + ".weight._shift", scale_dtype, {groups, 1}, groups * scale_bytes},
              {m + ".input_scale", scale_dtype, {}, scale_bytes},
              {m + ".output_scale", scale_dtype, {}, scale_bytes}};
    }
    case Layout::kChatglmInt8:
      return {{m + ".weight", DType::kI8, {t.rows, t.cols}, n},
              {m + ".weight_scale", DType::kF16, {t.rows}, t.rows * 2}};
    case Layout::kChatglmInt4:
      return {{m + ".weight", DType::kI8, {t.rows, t.cols / 2}, n / 2},
              {m + ".weight_scale", DType::kF16, {t.rows}, t.rows * 2}};
  }
  return {};
}

// The quant_state JSON without double quantization has a fixed length; with it, the offset's
// repr varies, so the planned length is the longest a float32's repr can take and the JSON is
// padded with spaces before the closing brace (json.loads reads it the same).
uint64_t QuantStateBytes(const LayoutSpec& spec, const LayoutTensorPlan& t) {
  constexpr size_t kLongestFloatRepr = 24;  // "-1.2345678901234567e-308" and the like
  std::string json = QuantStateJson(spec, t, 0.0f);
  return spec.double_quant ? json.size() - 3 + kLongestFloatRepr : json.size();
}

}  // namespace

bool IsLayoutScheme(absl::string_view scheme) { return ParseLayout(scheme).has_value(); }

std::optional<Layout> ParseLayout(absl::string_view scheme) {
  for (const auto& [name, layout] : kLayouts) {
    if (scheme == name) return layout;
  }
  return std::nullopt;
}

std::optional<StoredFloat> StoredFloatOf(DType d) {
  switch (d) {
    case DType::kF32: return StoredFloat::kF32;
    case DType::kF16: return StoredFloat::kF16;
    case DType::kBF16: return StoredFloat::kBF16;
    default: return std::nullopt;
  }
}

DType DTypeOf(StoredFloat f) {
  switch (f) {
    case StoredFloat::kF16: return DType::kF16;
    case StoredFloat::kBF16: return DType::kBF16;
    case StoredFloat::kF32: break;
  }
  return DType::kF32;
}

const char* TorchDtypeName(StoredFloat f) {
  switch (f) {
    case StoredFloat::kF16: return "float16";
    case StoredFloat::kBF16: return "bfloat16";
    case StoredFloat::kF32: break;
  }
  return "float32";
}

absl::StatusOr<LayoutSpec> ParseLayoutSpec(const v1::QuantizeSpec& q) {
  std::optional<Layout> layout = ParseLayout(q.scheme());
  if (!layout)
    return FieldError("INVALID_SCHEME", "quantize.scheme", absl::StrCat("'", q.scheme(), "' is not a layout scheme"));
  LayoutSpec spec;
  spec.layout = *layout;
  if (!q.max_split_size().empty()) {
    return FieldError("INVALID_ARGUMENT", "quantize.max_split_size", "split output applies to GGUF schemes");
  }
  if (q.tensor_types_size() > 0) {
    return FieldError("INVALID_ARGUMENT", "quantize.tensor_types",
                      "per-tensor GGUF types apply to GGUF schemes only; use include/exclude to choose tensors");
  }
  const bool bnb4 = *layout == Layout::kBnbNf4 || *layout == Layout::kBnbFp4;
  if (q.block_size() != 0) {
    if (!bnb4)
      return FieldError("INVALID_ARGUMENT", "quantize.block_size", "block_size applies to bnb_nf4 and bnb_fp4");
    if (!IsValidBnb4Block(q.block_size())) {
      return FieldError(
          "INVALID_VALUE", "quantize.block_size",
          absl::StrCat("block_size ", q.block_size(), " is not one of 32, 64, 128, 256, 512, 1024, 2048, 4096"));
    }
    spec.bnb_block = q.block_size();
  }
  if (q.double_quant() && !bnb4) {
    return FieldError("INVALID_ARGUMENT", "quantize.double_quant", "double_quant applies to bnb_nf4 and bnb_fp4");
  }
  spec.double_quant = q.double_quant();
  if (q.group_size() != 0) {
    if (*layout != Layout::kQuantoInt4)
      return FieldError("INVALID_ARGUMENT", "quantize.group_size", "group_size applies to quanto_int4");
    spec.quanto_group = q.group_size();
  }
  for (int i = 0; i < q.include_size(); ++i) {
    absl::StatusOr<Pattern> p = Pattern::Compile(q.include(i), absl::StrCat("quantize.include[", i, "]"));
    if (!p.ok()) return p.status();
    spec.include.push_back(*std::move(p));
  }
  for (int i = 0; i < q.exclude_size(); ++i) {
    absl::StatusOr<Pattern> p = Pattern::Compile(q.exclude(i), absl::StrCat("quantize.exclude[", i, "]"));
    if (!p.ok()) return p.status();
    spec.exclude.push_back(*std::move(p));
  }
  spec.min_elements = q.min_elements();
  spec.strict = q.strict();
  return spec;
}

std::string QuantStateJson(const LayoutSpec& spec, const LayoutTensorPlan& t, float nested_offset) {
  std::string json = absl::StrCat("{\"quant_type\": \"", spec.layout == Layout::kBnbNf4 ? "nf4" : "fp4",
                                  "\", \"blocksize\": ", spec.bnb_block, ", \"dtype\": \"", TorchDtypeName(t.stored),
                                  "\", \"shape\": [", absl::StrJoin(t.source->shape, ", "), "]");
  if (spec.double_quant) {
    absl::StrAppend(&json, ", \"nested_blocksize\": ", kBnbNestedBlock,
                    ", \"nested_dtype\": \"float32\", \"nested_offset\": ", PythonFloatRepr(nested_offset));
  }
  return json + "}";
}

std::vector<SafetensorsEntry> PlanQuantizedOutputs(const LayoutSpec& spec, const LayoutTensorPlan& t) {
  return QuantizedOutputs(spec, t, QuantStateBytes(spec, t));
}

absl::StatusOr<LayoutPlan> MakeLayoutPlan(const v1::QuantizeSpec& q, const StorageRouter& router) {
  absl::StatusOr<LayoutSpec> spec = ParseLayoutSpec(q);
  if (!spec.ok()) return spec.status();
  absl::StatusOr<Location> input = router.Resolve(q.input());
  if (!input.ok()) return WithReason(input.status(), ReasonOf(input.status()), {{"field", "quantize.input"}});
  absl::StatusOr<ModelView> model = OpenModel(*input);
  if (!model.ok()) return WithReason(model.status(), ReasonOf(model.status()), {{"field", "quantize.input"}});
  if (absl::Status s = RefuseTorchInput(*model); !s.ok()) return s;
  if (model->gguf) {
    return MakeError(absl::StatusCode::kInvalidArgument, "UNSUPPORTED_INPUT",
                     absl::StrCat("scheme '", q.scheme(), "' writes safetensors and takes a safetensors input; '",
                                  model->uri, "' is GGUF"),
                     {{"field", "quantize.input"}});
  }
  absl::StatusOr<std::optional<nlohmann::json>> config = ReadModelConfig(*input->store, *model);
  if (!config.ok()) return config.status();
  absl::StatusOr<RequantizeInputs> requantize = OpenRequantizeInputs(*model, *config, q.allow_requantize());
  if (!requantize.ok()) return requantize.status();
  LayoutPlan plan{*std::move(spec), *std::move(model), *std::move(config), {}, {}, *std::move(requantize)};
  std::set<std::string> names;  // the input's tensors that reach the output as they are
  for (const TensorInfo& t : plan.model.tensors) {
    if (!plan.requantize.group_of.contains(t.name)) names.insert(t.name);
  }
  for (const TensorInfo& stored_tensor : plan.model.tensors) {
    const QuantizedWeightReader* reader = nullptr;
    const TensorInfo* stand_in = plan.requantize.StandIn(stored_tensor, &reader);
    if (stand_in == nullptr) continue;
    const TensorInfo& t = *stand_in;
    LayoutTensorPlan p;
    p.source = &t;
    p.reader = reader;
    std::optional<StoredFloat> stored = StoredFloatOf(t.dtype);
    const uint64_t elements = ElementCount(t.shape).value_or(0);
    const bool linear_weight = stored && t.shape.size() == 2 && absl::EndsWith(t.name, ".weight") &&
                               !EmbeddingOrHead().FullMatch(t.name) && elements > 0;
    bool chosen = linear_weight && !AnyFullMatch(plan.spec.exclude, t.name) &&
                  (plan.spec.include.empty() || AnyFullMatch(plan.spec.include, t.name)) &&
                  elements >= plan.spec.min_elements;
    if (chosen) {
      p.stored = *stored;
      p.rows = t.shape[0];
      p.cols = t.shape[1];
      p.module = t.name.substr(0, t.name.size() - std::strlen(".weight"));
      bool fits = true;
      if (plan.spec.layout == Layout::kChatglmInt4) fits = p.cols % 2 == 0;
      if (plan.spec.layout == Layout::kQuantoInt4) {
        p.group = plan.spec.quanto_group != 0 ? plan.spec.quanto_group : QuantoDefaultGroup(p.cols);
        if (p.group == 0) p.group = p.cols;  // per output channel
        fits = p.cols % p.group == 0;
      }
      if (!fits) {
        if (plan.spec.strict) {
          return MakeError(
              absl::StatusCode::kInvalidArgument, "TENSOR_NOT_QUANTIZABLE",
              absl::StrCat("tensor '", t.name, "' with rows of ", p.cols, " elements cannot take ", q.scheme(),
                           plan.spec.layout == Layout::kChatglmInt4 ? " (int4 needs an even row)"
                                                                    : absl::StrCat(" (group ", p.group, ")")),
              {{"tensor", t.name}});
        }
        chosen = false;
        p.warn_not_quantizable = true;
      }
    }
    p.quantize = chosen;
    if (p.quantize) {
      p.outputs = PlanQuantizedOutputs(plan.spec, p);
      for (size_t i = 1; i < p.outputs.size(); ++i) {
        if (names.contains(p.outputs[i].name)) {
          return MakeError(
              absl::StatusCode::kInvalidArgument, "NAME_COLLISION",
              absl::StrCat("quantizing '", t.name, "' adds '", p.outputs[i].name, "', which the input already has"),
              {{"tensor", t.name}});
        }
      }
    } else {
      p.outputs = {{t.name, t.dtype, t.shape, t.size_bytes}};
      if (reader != nullptr) {
        p.stored = *StoredFloatOf(t.dtype);
        p.rows = reader->rows();
        p.cols = reader->columns();
      }
    }
    for (const SafetensorsEntry& e : p.outputs) plan.entries.push_back(e);
    plan.tensors.push_back(std::move(p));
  }
  return plan;
}

}  // namespace modelsmith
