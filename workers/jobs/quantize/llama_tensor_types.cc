#include "workers/jobs/quantize/llama_tensor_types.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/match.h"

namespace modelsmith {
namespace {

using F = LlamaFtype;
using T = GgmlType;

bool Has(const std::string& name, absl::string_view part) { return absl::StrContains(name, part); }

bool UseMoreBits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

uint32_t BlockOf(GgmlType type) { return GgmlTraits(static_cast<uint32_t>(type))->block_elements; }

// llama.cpp's fallback for a type whose blocks do not fit the rows; nullopt where it has none.
std::optional<GgmlType> FallbackFor(GgmlType type) {
  switch (type) {
    case T::kTQ1_0:
    case T::kTQ2_0: return T::kQ4_0;
    case T::kIQ2_XXS:
    case T::kIQ2_XS:
    case T::kIQ2_S:
    case T::kIQ3_XXS:
    case T::kIQ3_S:
    case T::kIQ1_S:
    case T::kIQ1_M:
    case T::kQ2_K:
    case T::kQ3_K:
    case T::kIQ4_XS: return T::kIQ4_NL;
    case T::kQ4_K: return T::kQ5_0;
    case T::kQ5_K: return T::kQ5_1;
    case T::kQ6_K: return T::kQ8_0;
    default: return std::nullopt;
  }
}

}  // namespace

bool LlamaQuantizesTensor(const TensorInfo& tensor, bool leave_output_tensor) {
  const std::string& name = tensor.name;
  if (!absl::EndsWith(name, "weight") || tensor.shape.size() < 2) return false;
  if (leave_output_tensor && name == "output.weight") return false;
  if (name == "position_embd.weight" || name == "token_types.weight") return false;
  static constexpr absl::string_view kKeptAsStored[] = {
      "_norm.weight",
      "ffn_gate_inp.weight",
      "altup",
      "laurel",
      "per_layer_model_proj",
      "ssm_conv1d.weight",
      "shortconv.conv.weight",
      "time_mix_first.weight",
      "time_mix_w0.weight",
      "time_mix_w1.weight",
      "time_mix_w2.weight",
      "time_mix_v0.weight",
      "time_mix_v1.weight",
      "time_mix_v2.weight",
      "time_mix_a0.weight",
      "time_mix_a1.weight",
      "time_mix_a2.weight",
      "time_mix_g1.weight",
      "time_mix_g2.weight",
      "time_mix_decay_w1.weight",
      "time_mix_decay_w2.weight",
      "time_mix_lerp_fused.weight",
      "attn_rel_b.weight",
  };
  return std::none_of(std::begin(kKeptAsStored), std::end(kKeptAsStored),
                      [&](absl::string_view part) { return Has(name, part); });
}

bool LlamaRequiresImportance(LlamaFtype ftype, const std::string& name, GgmlType type) {
  switch (type) {
    case T::kIQ2_XXS:
    case T::kIQ2_XS:
    case T::kIQ2_S:
    case T::kIQ1_S: return true;
    case T::kIQ1_M: return name != "token_embd.weight" && name != "output.weight";
    case T::kQ2_K: return ftype == F::kQ2_K_S && name != "token_embd.weight";
    default: return false;
  }
}

LlamaTensorTypes::LlamaTensorTypes(const LlamaFtypeInfo& ftype, const LlamaModelFacts& facts,
                                   const std::vector<const TensorInfo*>& tensors,
                                   std::optional<GgmlType> output_tensor_type,
                                   std::optional<GgmlType> token_embedding_type)
    : ftype_(ftype),
      facts_(facts),
      output_tensor_type_(output_tensor_type),
      token_embedding_type_(token_embedding_type) {
  if (facts_.n_layer == 0) {
    for (const TensorInfo* t : tensors) {
      int layer = -1;
      if (std::sscanf(t->name.c_str(), "blk.%d.", &layer) == 1) facts_.n_layer = std::max(facts_.n_layer, layer + 1);
    }
  }
  const int n_head_kv = facts_.n_head_kv > 0 ? facts_.n_head_kv : facts_.n_head;
  n_gqa_ = n_head_kv > 0 ? facts_.n_head / n_head_kv : 0;
  // llama.cpp calls an 80-layer Llama with grouped KV heads "70B".
  is_70b_ = facts_.arch == "llama" && facts_.n_layer == 80 && facts_.n_head != n_head_kv;
  for (const TensorInfo* t : tensors) {
    if (Has(t->name, "attn_v.weight") || Has(t->name, "attn_qkv.weight") || Has(t->name, "attn_kv_b.weight")) {
      ++n_attention_wv_;
    } else if (t->name == "output.weight") {
      has_output_ = true;
    }
  }
}

LlamaTensorTypes::Choice LlamaTensorTypes::Next(const TensorInfo& tensor) {
  Choice choice{Choose(tensor)};
  const uint64_t cols = tensor.shape.back();
  if (cols % BlockOf(choice.type) == 0) return choice;
  std::optional<GgmlType> fallback = FallbackFor(choice.type);
  if (!fallback) return choice;  // llama.cpp refuses the tensor; the planner reports it
  choice.type = cols % BlockOf(*fallback) == 0 ? *fallback : T::kF16;
  choice.fell_back = true;
  return choice;
}

int LlamaTensorTypes::LayerOf(int counter, const std::string& name) const {
  // With experts, FFN tensors are not in layer order: the layer is the name's blk.N.
  int layer = counter;
  if (std::max(1, facts_.n_expert) > 1) std::sscanf(name.c_str(), "blk.%d.", &layer);
  return layer;
}

GgmlType LlamaTensorTypes::Choose(const TensorInfo& tensor) {
  const std::string& name = tensor.name;
  const GgmlType type = ftype_.base;
  const bool iq1_iq2 =
      Is(F::kIQ2_XXS) || Is(F::kIQ2_XS) || Is(F::kIQ1_S) || Is(F::kIQ2_S) || Is(F::kIQ2_M) || Is(F::kIQ1_M);
  const bool iq2_s_m = Is(F::kIQ2_S) || Is(F::kIQ2_M);
  const int n_layer = facts_.n_layer;
  if (name == "output.weight" || (!has_output_ && name == "token_embd.weight")) {
    return output_tensor_type_ ? *output_tensor_type_ : ChooseOutput(tensor.shape.back());
  }
  if (name == "token_embd.weight") return ChooseTokenEmbedding(type);
  if (iq1_iq2) {
    if (Has(name, "attn_v.weight")) {
      ++i_attention_wv_;
      if (n_gqa_ >= 4 || facts_.n_expert >= 4) return T::kQ4_K;
      return iq2_s_m ? T::kIQ3_S : T::kQ2_K;
    }
    if (facts_.n_expert == 8 && Has(name, "attn_k.weight")) return T::kQ4_K;
    if (Has(name, "ffn_down")) {
      const bool first_eighth = i_ffn_down_ < n_layer / 8;
      ++i_ffn_down_;
      if (first_eighth) return iq2_s_m ? T::kIQ3_S : T::kQ2_K;
      return type;
    }
    if (Has(name, "attn_output.weight")) {
      if (facts_.n_expert == 8) return T::kQ5_K;
      if (Is(F::kIQ1_S) || Is(F::kIQ1_M)) return T::kIQ2_XXS;
      if (iq2_s_m) return T::kIQ3_S;
    }
    return type;
  }
  if (Has(name, "attn_v.weight")) return ChooseAttentionV(type);
  if (Has(name, "attn_k.weight")) {
    if (facts_.n_expert == 8) return T::kQ8_0;
    if (Is(F::kIQ3_XS)) return T::kIQ3_XXS;
    if (Is(F::kIQ3_XXS)) return T::kIQ2_S;
    return type;
  }
  if (Has(name, "attn_q.weight")) {
    if (Is(F::kIQ3_XS)) return T::kIQ3_XXS;
    if (Is(F::kIQ3_XXS)) return T::kIQ2_S;
    return type;
  }
  if (Has(name, "ffn_down")) return ChooseFfnDown(type, name);
  if (Has(name, "attn_output.weight")) return ChooseAttentionOutput(type);
  if (Has(name, "attn_qkv.weight")) {
    if (Is(F::kQ3_K_M) || Is(F::kQ3_K_L) || Is(F::kIQ3_M)) return T::kQ4_K;
    if (Is(F::kQ4_K_M)) return T::kQ5_K;
    if (Is(F::kQ5_K_M)) return T::kQ6_K;
    return type;
  }
  const bool gate = Has(name, "ffn_gate");
  if (gate || Has(name, "ffn_up")) {
    int& counter = gate ? i_ffn_gate_ : i_ffn_up_;
    const int i = LayerOf(counter, name);
    ++counter;
    if (Is(F::kIQ3_XS) && i >= n_layer / 8 && i < 7 * n_layer / 8) return T::kIQ3_XXS;
  }
  return type;
}

GgmlType LlamaTensorTypes::ChooseOutput(uint64_t cols) const {
  if (facts_.arch == "falcon" || cols % BlockOf(ftype_.base) != 0) return T::kQ8_0;
  if (Is(F::kIQ2_XXS) || Is(F::kIQ2_XS) || Is(F::kIQ3_XXS) || Is(F::kIQ1_S) || Is(F::kIQ2_S) || Is(F::kIQ2_M) ||
      Is(F::kIQ1_M)) {
    return T::kQ5_K;
  }
  return ftype_.base != T::kQ8_0 ? T::kQ6_K : ftype_.base;
}

GgmlType LlamaTensorTypes::ChooseTokenEmbedding(GgmlType type) const {
  if (token_embedding_type_) return *token_embedding_type_;
  if (Is(F::kIQ2_XXS) || Is(F::kIQ2_XS) || Is(F::kIQ1_S) || Is(F::kIQ1_M)) return T::kQ2_K;
  if (Is(F::kIQ2_S) || Is(F::kIQ2_M) || Is(F::kIQ3_XXS)) return T::kIQ3_S;
  if (Is(F::kTQ1_0) || Is(F::kTQ2_0)) return T::kQ4_K;
  return type;
}

GgmlType LlamaTensorTypes::ChooseAttentionV(GgmlType type) {
  const int i = i_attention_wv_++;
  if (Is(F::kQ2_K)) {
    type = n_gqa_ >= 4 ? T::kQ4_K : T::kQ3_K;
  } else if (Is(F::kQ2_K_S) && n_gqa_ >= 4) {
    type = T::kQ4_K;
  } else if (Is(F::kIQ3_XXS)) {
    type = n_gqa_ >= 4 ? T::kQ4_K : !facts_.has_imatrix ? T::kIQ3_S : T::kIQ3_XXS;
  } else if ((Is(F::kIQ3_XS) || Is(F::kIQ3_S)) && n_gqa_ >= 4) {
    type = T::kQ4_K;
  } else if (Is(F::kIQ3_M)) {
    type = T::kQ4_K;
  } else if (Is(F::kQ3_K_M)) {
    type = i < 2 ? T::kQ5_K : T::kQ4_K;
  } else if (Is(F::kQ3_K_L)) {
    type = T::kQ5_K;
  } else if ((Is(F::kIQ4_NL) || Is(F::kIQ4_XS)) && n_gqa_ >= 4) {
    type = T::kQ5_K;
  } else if ((Is(F::kQ4_K_M) || Is(F::kQ5_K_M)) && UseMoreBits(i, n_attention_wv_)) {
    type = T::kQ6_K;
  } else if (Is(F::kQ4_K_S) && i < 4) {
    type = T::kQ5_K;
  }
  // 70B: 8 heads share attn_v, which is 8x smaller than attn_q: more bits cost little.
  if (is_70b_ && (type == T::kQ3_K || type == T::kQ4_K)) type = T::kQ5_K;
  if (facts_.n_expert == 8) type = T::kQ8_0;
  return type;
}

GgmlType LlamaTensorTypes::ChooseFfnDown(GgmlType type, const std::string& name) {
  const int i = LayerOf(i_ffn_down_, name);
  const int n = facts_.n_layer;
  ++i_ffn_down_;
  const bool falcon = facts_.arch == "falcon";
  if (Is(F::kQ2_K)) return T::kQ3_K;
  if (Is(F::kQ2_K_S)) return i < n / 8 ? T::kQ4_K : type;
  if (Is(F::kIQ3_XXS) && !facts_.has_imatrix) return i < n / 8 ? T::kQ4_K : T::kQ3_K;
  if (Is(F::kQ3_K_M)) return i < n / 16 ? T::kQ5_K : !falcon || UseMoreBits(i, n) ? T::kQ4_K : T::kQ3_K;
  if (Is(F::kIQ3_M) && (i < n / 8 || (facts_.n_expert == 8 && UseMoreBits(i, n)))) return T::kQ4_K;
  if (Is(F::kQ3_K_L)) return falcon ? T::kQ4_K : T::kQ5_K;
  if (Is(F::kQ4_K_M)) {
    if (falcon) return i < n / 16 ? T::kQ6_K : UseMoreBits(i, n) ? T::kQ5_K : T::kQ4_K;
    return UseMoreBits(i, n) ? T::kQ6_K : type;
  }
  if (i < n / 8 && (Is(F::kIQ4_NL) || Is(F::kIQ4_XS)) && !facts_.has_imatrix) return T::kQ5_K;
  if (Is(F::kQ5_K_M) && UseMoreBits(i, n)) return T::kQ6_K;
  if (Is(F::kQ4_K_S) && !falcon && i < n / 8) return T::kQ5_K;
  // With an importance matrix, the first layers' ffn_down can still go wrong in Q4_0/Q5_0.
  if ((Is(F::kQ4_0) || Is(F::kQ5_0)) && facts_.has_imatrix && i < n / 8) {
    return Is(F::kQ4_0) ? T::kQ4_1 : T::kQ5_1;
  }
  return type;
}

GgmlType LlamaTensorTypes::ChooseAttentionOutput(GgmlType type) const {
  if (facts_.arch == "falcon") return Is(F::kQ3_K_L) ? T::kQ4_K : type;
  if (facts_.n_expert == 8) {
    const bool bump = Is(F::kQ2_K) || Is(F::kIQ3_XS) || Is(F::kIQ3_XXS) || Is(F::kQ3_K_S) || Is(F::kQ3_K_M) ||
                      Is(F::kIQ4_NL) || Is(F::kQ4_K_S) || Is(F::kQ4_K_M) || Is(F::kIQ3_S) || Is(F::kIQ3_M) ||
                      Is(F::kIQ4_XS);
    return bump ? T::kQ5_K : type;
  }
  if (Is(F::kQ2_K)) return T::kQ3_K;
  if (Is(F::kIQ3_XXS)) return T::kIQ3_S;
  if (Is(F::kQ3_K_M)) return T::kQ4_K;
  if (Is(F::kQ3_K_L)) return T::kQ5_K;
  if (Is(F::kIQ3_M)) return T::kQ4_K;
  return type;
}

}  // namespace modelsmith
