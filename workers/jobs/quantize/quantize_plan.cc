#include "workers/jobs/quantize/quantize_plan.h"

#include <cstdio>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

bool IsFloat(GgmlType t) { return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16; }

}  // namespace

absl::StatusOr<GgmlType> SourceGgmlType(const TensorInfo& tensor) {
  if (tensor.ggml_type) return static_cast<GgmlType>(*tensor.ggml_type);
  switch (tensor.dtype) {
    case DType::kF32: return GgmlType::kF32;
    case DType::kF16: return GgmlType::kF16;
    case DType::kBF16: return GgmlType::kBF16;
    case DType::kI8: return GgmlType::kI8;
    case DType::kI16: return GgmlType::kI16;
    case DType::kI32: return GgmlType::kI32;
    case DType::kI64: return GgmlType::kI64;
    case DType::kF64: return GgmlType::kF64;
    default:
      return MakeError(
          absl::StatusCode::kInvalidArgument, "UNSUPPORTED_DTYPE",
          absl::StrCat("tensor '", tensor.name, "' is ", DTypeName(tensor.dtype), ", which GGUF cannot hold"),
          {{"tensor", tensor.name}});
  }
}

absl::StatusOr<QuantizePlanner> QuantizePlanner::Create(const v1::QuantizeSpec& spec) {
  QuantizePlanner planner;
  if (spec.scheme().empty()) return FieldError("MISSING_FIELD", "quantize.scheme", "'quantize.scheme' is required");
  std::optional<GgmlTypeTraits> scheme = GgmlTraitsByName(spec.scheme());
  if (!scheme || !(scheme->quantized || IsFloat(scheme->type)) || scheme->type == GgmlType::kQ8_1 ||
      scheme->type == GgmlType::kQ8_K) {
    static const std::map<std::string, std::pair<Preset, const char*>> kPresets = {
        {"Q3_K_S", {Preset::kQ3_K_S, "Q3_K"}}, {"Q3_K_M", {Preset::kQ3_K_M, "Q3_K"}},
        {"Q3_K_L", {Preset::kQ3_K_L, "Q3_K"}}, {"Q4_K_S", {Preset::kQ4_K_S, "Q4_K"}},
        {"Q4_K_M", {Preset::kQ4_K_M, "Q4_K"}}, {"Q5_K_S", {Preset::kQ5_K_S, "Q5_K"}},
        {"Q5_K_M", {Preset::kQ5_K_M, "Q5_K"}},
    };
    auto preset = kPresets.find(spec.scheme());
    if (preset != kPresets.end()) {
      scheme = GgmlTraitsByName(preset->second.second);
      planner.preset_ = preset->second.first;
    } else {
      return FieldError(
          "INVALID_SCHEME", "quantize.scheme",
          absl::StrCat("unknown scheme '", spec.scheme(),
                       "' (GGUF types: Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K Q4_K Q5_K Q6_K F16 BF16 F32; "
                       "presets: Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M; "
                       "layouts: bnb_int8 bnb_nf4 bnb_fp4 quanto_int8 quanto_int4 chatglm_int8 chatglm_int4)"));
    }
  }
  planner.scheme_ = scheme->type;
  for (int i = 0; i < spec.tensor_types_size(); ++i) {
    const auto& rule = spec.tensor_types(i);
    const std::string field = absl::StrCat("quantize.tensor_types[", i, "]");
    absl::StatusOr<Pattern> pattern = Pattern::Compile(rule.pattern(), field);
    if (!pattern.ok()) return pattern.status();
    std::optional<GgmlTypeTraits> type = GgmlTraitsByName(rule.type());
    if (!type || !(type->quantized || IsFloat(type->type)) || type->type == GgmlType::kQ8_1 ||
        type->type == GgmlType::kQ8_K) {
      return FieldError("INVALID_TYPE", field,
                        absl::StrCat("'", rule.type(), "' is not a GGUF type Modelsmith writes"));
    }
    planner.overrides_.push_back({*std::move(pattern), type->type});
  }
  for (int i = 0; i < spec.include_size(); ++i) {
    absl::StatusOr<Pattern> r = Pattern::Compile(spec.include(i), absl::StrCat("quantize.include[", i, "]"));
    if (!r.ok()) return r.status();
    planner.include_.push_back(*std::move(r));
  }
  for (int i = 0; i < spec.exclude_size(); ++i) {
    absl::StatusOr<Pattern> r = Pattern::Compile(spec.exclude(i), absl::StrCat("quantize.exclude[", i, "]"));
    if (!r.ok()) return r.status();
    planner.exclude_.push_back(*std::move(r));
  }
  planner.min_elements_ = spec.min_elements();
  planner.strict_ = spec.strict();
  return planner;
}

absl::StatusOr<TensorPlan> QuantizePlanner::Plan(const TensorInfo& tensor) const {
  absl::StatusOr<GgmlType> source = SourceGgmlType(tensor);
  if (!source.ok()) return source.status();
  if (tensor.shape.size() > 4) {
    return MakeError(
        absl::StatusCode::kInvalidArgument, "TOO_MANY_DIMS",
        absl::StrCat("tensor '", tensor.name, "' has ", tensor.shape.size(), " dimensions; GGUF holds at most 4"),
        {{"tensor", tensor.name}});
  }
  TensorPlan plan{*source, *source};
  const bool floating = IsFloat(*source) || GgmlTraits(static_cast<uint32_t>(*source))->quantized;
  bool decided = false;
  for (const Override& o : overrides_) {
    if (o.pattern.FullMatch(tensor.name)) {
      plan.target_type = o.type;
      decided = true;
      break;
    }
  }
  if (!decided && floating) {
    const uint64_t elements = ElementCount(tensor.shape).value_or(0);
    if (tensor.shape.size() <= 1) {
      plan.target_type = GgmlType::kF32;
    } else if (AnyFullMatch(exclude_, tensor.name) || (!include_.empty() && !AnyFullMatch(include_, tensor.name)) ||
               elements < min_elements_) {
      plan.target_type = IsFloat(*source) ? *source : GgmlType::kF32;
    } else {
      auto preset = preset_types_.find(tensor.name);
      plan.target_type = preset != preset_types_.end() ? preset->second : scheme_;
    }
  }
  if (!floating && plan.target_type != *source) {
    return MakeError(absl::StatusCode::kInvalidArgument, "NOT_A_FLOAT_TENSOR",
                     absl::StrCat("tensor '", tensor.name, "' holds integers and cannot become ",
                                  GgmlTraits(static_cast<uint32_t>(plan.target_type))->name),
                     {{"tensor", tensor.name}});
  }
  const uint64_t row = tensor.shape.empty() ? 1 : tensor.shape.back();
  if (!GgmlRowBytes(plan.target_type, row)) {
    if (strict_) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "TENSOR_NOT_QUANTIZABLE",
                       absl::StrCat("tensor '", tensor.name, "': rows of ", row, " elements are not whole ",
                                    GgmlTraits(static_cast<uint32_t>(plan.target_type))->name, " blocks"),
                       {{"tensor", tensor.name}});
    }
    plan.target_type = IsFloat(*source) ? *source : GgmlType::kF32;
    plan.warn_not_quantizable = true;
  }
  return plan;
}

void QuantizePlanner::PrepareForModel(const std::vector<const TensorInfo*>& tensors, const ModelFacts& facts) {
  preset_types_.clear();
  if (preset_ == Preset::kNone) return;
  // llama.cpp's llama_tensor_get_type (src/llama-quant.cpp) for these presets, in its order.
  auto use_more_bits = [](int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; };
  const bool falcon = facts.arch == "falcon";
  const bool eight_experts = facts.n_expert == 8;
  int n_layer = facts.n_layer;
  if (n_layer == 0) {
    for (const TensorInfo* t : tensors) {
      int layer = -1;
      if (std::sscanf(t->name.c_str(), "blk.%d.", &layer) == 1) n_layer = std::max(n_layer, layer + 1);
    }
  }
  const bool is_70b = facts.arch == "llama" && n_layer == 80;
  const bool has_output =
      std::any_of(tensors.begin(), tensors.end(), [](const TensorInfo* t) { return t->name == "output.weight"; });
  int n_attention_wv = 0;
  for (const TensorInfo* tensor : tensors) {
    const TensorInfo& t = *tensor;
    n_attention_wv += absl::StrContains(t.name, "attn_v.weight") || absl::StrContains(t.name, "attn_qkv.weight") ||
                      absl::StrContains(t.name, "attn_kv_b.weight");
  }
  // With experts, a tensor's layer is its blk.N (their FFN tensors are not in layer order).
  auto layer_of = [&](int counter, const std::string& name) {
    int layer = counter;
    if (facts.n_expert > 1) std::sscanf(name.c_str(), "blk.%d.", &layer);
    return layer;
  };
  int i_attention_wv = 0, i_ffn_down = 0;
  const Preset p = preset_;
  for (const TensorInfo* tensor : tensors) {
    const TensorInfo& t = *tensor;
    if (t.shape.size() < 2) continue;
    const uint64_t cols = t.shape.back();
    GgmlType type = scheme_;
    const std::string& name = t.name;
    if (name == "output.weight" || (!has_output && name == "token_embd.weight")) {
      if (falcon || cols % 256 != 0) {
        type = GgmlType::kQ8_0;
      } else {
        type = GgmlType::kQ6_K;
      }
    } else if (name == "token_embd.weight") {
      // the scheme's type, for these presets
    } else if (absl::StrContains(name, "attn_v.weight")) {
      if (p == Preset::kQ3_K_M) {
        type = i_attention_wv < 2 ? GgmlType::kQ5_K : GgmlType::kQ4_K;
      } else if (p == Preset::kQ3_K_L) {
        type = GgmlType::kQ5_K;
      } else if ((p == Preset::kQ4_K_M || p == Preset::kQ5_K_M) && use_more_bits(i_attention_wv, n_attention_wv)) {
        type = GgmlType::kQ6_K;
      } else if (p == Preset::kQ4_K_S && i_attention_wv < 4) {
        type = GgmlType::kQ5_K;
      }
      // 70B: 8 heads share attn_v, which is 8x smaller than attn_q: more bits cost little.
      if (is_70b && (type == GgmlType::kQ3_K || type == GgmlType::kQ4_K)) type = GgmlType::kQ5_K;
      if (eight_experts) type = GgmlType::kQ8_0;
      ++i_attention_wv;
    } else if (absl::StrContains(name, "attn_k.weight")) {
      if (eight_experts) type = GgmlType::kQ8_0;
    } else if (absl::StrContains(name, "ffn_down")) {
      const int i = layer_of(i_ffn_down, name);
      const int n = n_layer;
      if (p == Preset::kQ3_K_M) {
        type = i < n / 16 ? GgmlType::kQ5_K : !falcon || use_more_bits(i, n) ? GgmlType::kQ4_K : GgmlType::kQ3_K;
      } else if (p == Preset::kQ3_K_L) {
        type = falcon ? GgmlType::kQ4_K : GgmlType::kQ5_K;
      } else if (p == Preset::kQ4_K_M) {
        if (falcon) {
          type = i < n / 16 ? GgmlType::kQ6_K : use_more_bits(i, n) ? GgmlType::kQ5_K : GgmlType::kQ4_K;
        } else if (use_more_bits(i, n)) {
          type = GgmlType::kQ6_K;
        }
      } else if (p == Preset::kQ5_K_M && use_more_bits(i, n)) {
        type = GgmlType::kQ6_K;
      } else if (p == Preset::kQ4_K_S && !falcon && i < n / 8) {
        type = GgmlType::kQ5_K;
      }
      ++i_ffn_down;
    } else if (absl::StrContains(name, "attn_output.weight")) {
      if (!falcon) {
        if (eight_experts) {
          if (p == Preset::kQ3_K_S || p == Preset::kQ3_K_M || p == Preset::kQ4_K_S || p == Preset::kQ4_K_M) {
            type = GgmlType::kQ5_K;
          }
        } else if (p == Preset::kQ3_K_M) {
          type = GgmlType::kQ4_K;
        } else if (p == Preset::kQ3_K_L) {
          type = GgmlType::kQ5_K;
        }
      } else if (p == Preset::kQ3_K_L) {
        type = GgmlType::kQ4_K;
      }
    } else if (absl::StrContains(name, "attn_qkv.weight")) {
      if (p == Preset::kQ3_K_M || p == Preset::kQ3_K_L) {
        type = GgmlType::kQ4_K;
      } else if (p == Preset::kQ4_K_M) {
        type = GgmlType::kQ5_K;
      } else if (p == Preset::kQ5_K_M) {
        type = GgmlType::kQ6_K;
      }
    }
    if (cols % 256 != 0) {  // llama.cpp's fallback for rows that are not whole super-blocks
      if (type == GgmlType::kQ4_K)
        type = GgmlType::kQ5_0;
      else if (type == GgmlType::kQ5_K)
        type = GgmlType::kQ5_1;
      else if (type == GgmlType::kQ6_K)
        type = GgmlType::kQ8_0;
      if (cols % 32 != 0) type = GgmlType::kF16;
    }
    preset_types_[t.name] = type;
  }
}

uint32_t QuantizePlanner::file_type() const {
  switch (preset_) {
    case Preset::kQ3_K_S: return 11;
    case Preset::kQ3_K_M: return 12;
    case Preset::kQ3_K_L: return 13;
    case Preset::kQ4_K_S: return 14;
    case Preset::kQ4_K_M: return 15;
    case Preset::kQ5_K_S: return 16;
    case Preset::kQ5_K_M: return 17;
    case Preset::kNone: break;
  }
  return LlamaFileType(scheme_);
}

uint32_t LlamaFileType(GgmlType scheme) {
  switch (scheme) {
    case GgmlType::kF32: return 0;
    case GgmlType::kF16: return 1;
    case GgmlType::kQ4_0: return 2;
    case GgmlType::kQ4_1: return 3;
    case GgmlType::kQ8_0: return 7;
    case GgmlType::kQ5_0: return 8;
    case GgmlType::kQ5_1: return 9;
    case GgmlType::kQ2_K: return 10;
    case GgmlType::kQ3_K: return 12;
    case GgmlType::kQ4_K: return 15;
    case GgmlType::kQ5_K: return 17;
    case GgmlType::kQ6_K: return 18;
    case GgmlType::kBF16: return 32;
    default: return 0;
  }
}

}  // namespace modelsmith
