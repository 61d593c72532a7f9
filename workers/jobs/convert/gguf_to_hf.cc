#include "workers/jobs/convert/gguf_to_hf.h"

#include <algorithm>
#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "workers/common/error.h"
#include "workers/common/float_text.h"
#include "workers/jobs/convert/llama3_rope.h"

namespace modelsmith {
namespace {

absl::Status MetadataError(absl::string_view key, absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, "GGUF_METADATA_INVALID",
                   absl::StrCat("GGUF key '", key, "': ", message), {{"field", std::string(key)}});
}

std::optional<double> AsFloat(const GgufKv& kv) {
  if (kv.type == GgufValueType::kF32 && kv.value_bytes.size() == 4) {
    float f;
    std::memcpy(&f, kv.value_bytes.data(), 4);
    return ShortestDecimal(f);
  }
  if (kv.type == GgufValueType::kF64 && kv.value_bytes.size() == 8) {
    double d;
    std::memcpy(&d, kv.value_bytes.data(), 8);
    return d;
  }
  return std::nullopt;
}

// The Llama 3 RoPE scaling whose table rope_freqs.weight holds; FAILED_PRECONDITION
// (ROPE_FREQS_UNRECOVERABLE) when no parameters give that table exactly, as the model would then
// compute something else on the Hugging Face side.
absl::StatusOr<Llama3RopeScaling> RopeScalingOf(const ModelView& model, const TensorInfo& t,
                                                std::optional<double> base) {
  auto refuse = [&](absl::string_view why) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "ROPE_FREQS_UNRECOVERABLE",
                     absl::StrCat("GGUF tensor 'rope_freqs.weight' ", why,
                                  "; Hugging Face has no tensor for it, only Llama 3's rope_scaling"),
                     {{"tensor", t.name}});
  };
  constexpr uint64_t kMaxPairs = 1 << 16;
  if (t.dtype != DType::kF32 || t.ggml_type.value_or(0) != 0 || t.shape.size() != 1 || t.shape[0] == 0 ||
      t.shape[0] > kMaxPairs || t.size_bytes != t.shape[0] * 4 || t.file_index >= model.files.size()) {
    return refuse("is not a one-dimensional F32 table");
  }
  std::vector<float> table(t.shape[0]);
  if (absl::Status read = model.files[t.file_index].object->ReadAt(t.data_offset, t.size_bytes,
                                                                   reinterpret_cast<std::byte*>(table.data()));
      !read.ok()) {
    return read;
  }
  std::optional<Llama3RopeScaling> scaling = RecoverLlama3RopeScaling(table, base.value_or(10000.0));
  if (!scaling) return refuse("is not a table that Llama 3 RoPE scaling parameters compute");
  return *scaling;
}

// The Hugging Face name of a llama.cpp tensor name, or empty.
std::string HfName(const std::string& gguf) {
  const LlamaNames& names = LlamaTensorNames();
  if (auto it = names.top.find(gguf); it != names.top.end()) return it->second;
  // "blk.<N>.<name>.<weight|bias>", parsed by hand: tensor names come from the file.
  const std::vector<absl::string_view> parts = absl::StrSplit(gguf, '.');
  if (parts.size() != 4 || parts[0] != "blk" || parts[1].empty() || parts[2].empty()) return "";
  if (!std::all_of(parts[1].begin(), parts[1].end(), absl::ascii_isdigit)) return "";
  if (!std::all_of(parts[2].begin(), parts[2].end(), [](char c) { return absl::ascii_islower(c) || c == '_'; })) {
    return "";
  }
  if (parts[3] != "weight" && parts[3] != "bias") return "";
  auto it = names.block.find(std::string(parts[2]));
  if (it == names.block.end()) return "";
  return absl::StrCat("model.layers.", parts[1], ".", it->second, ".", parts[3]);
}

// Phi-3's fused tensors keep their fused Hugging Face names: attn_qkv is self_attn.qkv_proj and
// ffn_up ([gate; up] rows) is mlp.gate_up_proj.
std::string Phi3HfName(const std::string& gguf) {
  return MapThroughProbe(gguf, {{".attn_qkv.", ".self_attn.qkv_proj."}, {".ffn_up.", ".mlp.gate_up_proj."}},
                         ".attn_output.", ".self_attn.o_proj.", HfName);
}

// Gemma 2's four norms per layer (the inverse of hf_to_gguf's Gemma2GgufName).
std::string Gemma2HfName(const std::string& gguf) {
  return MapThroughProbe(gguf,
                         {{".post_attention_norm.", ".post_attention_layernorm."},
                          {".ffn_norm.", ".pre_feedforward_layernorm."},
                          {".post_ffw_norm.", ".post_feedforward_layernorm."}},
                         ".attn_norm.", ".input_layernorm.", HfName);
}

}  // namespace

std::string MapThroughProbe(const std::string& name, std::initializer_list<std::pair<const char*, const char*>> renames,
                            const char* probe, const char* mapped_probe,
                            const std::function<std::string(const std::string&)>& map) {
  for (const auto& [from, to] : renames) {
    const size_t at = name.find(from);
    if (at == std::string::npos) continue;
    const std::string mapped = map(name.substr(0, at) + probe + name.substr(at + strlen(from)));
    return mapped.empty() ? "" : absl::StrReplaceAll(mapped, {{mapped_probe, to}});
  }
  return map(name);
}

const LlamaNames& LlamaTensorNames() {
  static const LlamaNames names{
      {{"token_embd.weight", "model.embed_tokens.weight"},
       {"output_norm.weight", "model.norm.weight"},
       {"output.weight", "lm_head.weight"}},
      {{"attn_norm", "input_layernorm"},
       {"attn_q", "self_attn.q_proj"},
       {"attn_k", "self_attn.k_proj"},
       {"attn_v", "self_attn.v_proj"},
       {"attn_output", "self_attn.o_proj"},
       {"ffn_gate", "mlp.gate_proj"},
       {"ffn_up", "mlp.up_proj"},
       {"ffn_down", "mlp.down_proj"},
       {"ffn_norm", "post_attention_layernorm"},
       {"attn_q_norm", "self_attn.q_norm"},
       {"attn_k_norm", "self_attn.k_norm"}},
  };
  return names;
}

absl::StatusOr<std::vector<uint64_t>> UnpermuteRows(uint64_t rows, uint64_t heads) {
  if (heads == 0 || rows % (2 * heads) != 0) {
    return MakeError(absl::StatusCode::kInvalidArgument, "GGUF_METADATA_INVALID",
                     absl::StrCat(rows, " rows do not split into ", heads, " heads of an even size"));
  }
  const uint64_t head_dim = rows / heads;
  const uint64_t half = head_dim / 2;
  std::vector<uint64_t> source(rows);
  for (uint64_t h = 0; h < heads; ++h) {
    for (uint64_t s = 0; s < 2; ++s) {
      for (uint64_t k = 0; k < half; ++k) source[h * head_dim + s * half + k] = h * head_dim + 2 * k + s;
    }
  }
  return source;
}

absl::StatusOr<GgufToHf> MapGgufToHf(const ModelView& model) {
  const GgufFile& gguf = *model.gguf;
  GgufToHf out;
  const GgufKv* arch_kv = gguf.Find("general.architecture");
  out.architecture = arch_kv ? arch_kv->AsString().value_or("") : "";
  std::string hf_class;
  if (out.architecture == "llama") hf_class = "LlamaForCausalLM";
  if (out.architecture == "qwen2") hf_class = "Qwen2ForCausalLM";
  if (out.architecture == "qwen3") hf_class = "Qwen3ForCausalLM";
  if (out.architecture == "phi3") hf_class = "Phi3ForCausalLM";
  if (out.architecture == "qwen3moe") hf_class = "Qwen3MoeForCausalLM";
  if (out.architecture == "gemma2") hf_class = "Gemma2ForCausalLM";
  if (out.architecture == "gemma3") hf_class = "Gemma3ForCausalLM";
  if (hf_class.empty()) {
    return MakeError(
        absl::StatusCode::kUnimplemented, "GGUF_ARCHITECTURE_UNSUPPORTED",
        absl::StrCat("GGUF architecture '", out.architecture,
                     "' is not converted to safetensors; llama (which Mistral and Mixtral use too), qwen2, "
                     "qwen3, qwen3moe, phi3, gemma2 and gemma3 are"),
        {{"field", "general.architecture"}});
  }
  const std::string a = out.architecture;
  auto unsigned_key = [&](const std::string& key, bool required) -> absl::StatusOr<std::optional<uint64_t>> {
    const GgufKv* kv = gguf.Find(key);
    if (kv == nullptr) {
      if (required) return MetadataError(key, "is missing");
      return std::optional<uint64_t>();
    }
    std::optional<uint64_t> v = kv->AsUnsigned();
    if (!v) return MetadataError(key, "is not an unsigned integer");
    return v;
  };
  auto float_key = [&](const std::string& key) -> std::optional<double> {
    const GgufKv* kv = gguf.Find(key);
    return kv ? AsFloat(*kv) : std::nullopt;
  };
  absl::StatusOr<std::optional<uint64_t>> hidden = unsigned_key(a + ".embedding_length", true);
  absl::StatusOr<std::optional<uint64_t>> layers = unsigned_key(a + ".block_count", true);
  absl::StatusOr<std::optional<uint64_t>> ffn = unsigned_key(a + ".feed_forward_length", true);
  absl::StatusOr<std::optional<uint64_t>> heads = unsigned_key(a + ".attention.head_count", true);
  absl::StatusOr<std::optional<uint64_t>> heads_kv = unsigned_key(a + ".attention.head_count_kv", false);
  absl::StatusOr<std::optional<uint64_t>> context = unsigned_key(a + ".context_length", false);
  for (const auto* s : {&hidden, &layers, &ffn, &heads, &heads_kv, &context}) {
    if (!s->ok()) return s->status();
  }
  const uint64_t n_head = **heads;
  const uint64_t n_head_kv = heads_kv->value_or(n_head);

  uint64_t vocab = 0, expert_count = 0;
  bool has_output = false;
  std::optional<Llama3RopeScaling> llama3_scaling;
  for (const TensorInfo& t : model.tensors) {
    if (t.name == "token_embd.weight" && !t.shape.empty()) vocab = t.shape.front();
    if (t.name == "output.weight") has_output = true;
    if (t.name == "rope_freqs.weight") {  // no Hugging Face tensor: it becomes rope_scaling
      absl::StatusOr<Llama3RopeScaling> scaling = RopeScalingOf(model, t, float_key(a + ".rope.freq_base"));
      if (!scaling.ok()) return scaling.status();
      llama3_scaling = *scaling;
      out.dropped.push_back(t.name);
      continue;
    }
    // Mixture of experts: the router, and each stacked tensor split back into one per expert.
    const std::vector<std::string> parts = absl::StrSplit(t.name, '.');
    const bool moe_block = parts.size() == 4 && parts[0] == "blk" && parts[3] == "weight";
    const std::string block = a == "qwen3moe" ? "mlp" : "block_sparse_moe";
    if (moe_block && parts[2] == "ffn_gate_inp") {
      out.tensors.emplace(t.name,
                          HfTensor{absl::StrCat("model.layers.", parts[1], ".", block, ".gate.weight"), {}, {}});
      continue;
    }
    static const std::map<std::string, std::pair<const char*, const char*>> kStacked = {
        {"ffn_gate_exps", {"w1", "gate_proj"}},
        {"ffn_up_exps", {"w3", "up_proj"}},
        {"ffn_down_exps", {"w2", "down_proj"}}};
    if (auto stacked = kStacked.find(moe_block ? parts[2] : ""); stacked != kStacked.end()) {
      if (t.shape.size() != 3 || t.shape[0] == 0) {
        return MakeError(absl::StatusCode::kInvalidArgument, "GGUF_TENSOR_UNMAPPED",
                         absl::StrCat("stacked expert tensor '", t.name, "' is not [experts, rows, columns]"),
                         {{"tensor", t.name}});
      }
      std::vector<HfTensor>& experts = out.experts[t.name];
      for (uint64_t e = 0; e < t.shape[0]; ++e) {
        HfTensor expert{absl::StrCat("model.layers.", parts[1], ".", block, ".experts.", e, ".",
                                     a == "qwen3moe" ? stacked->second.second : stacked->second.first, ".weight"),
                        {},
                        {t.shape[1], t.shape[2]}};
        for (uint64_t r = 0; r < t.shape[1]; ++r) expert.row_source.push_back(e * t.shape[1] + r);
        experts.push_back(std::move(expert));
      }
      expert_count = t.shape[0];
      continue;
    }
    const bool gemma = a == "gemma2" || a == "gemma3";
    HfTensor mapped{a == "phi3" ? Phi3HfName(t.name) : gemma ? Gemma2HfName(t.name) : HfName(t.name), {}, {}};
    if (gemma && absl::EndsWith(mapped.name, "norm.weight")) mapped.add = -1.0f;
    if (mapped.name.empty()) {
      return MakeError(absl::StatusCode::kInvalidArgument, "GGUF_TENSOR_UNMAPPED",
                       absl::StrCat("GGUF tensor '", t.name, "' has no Hugging Face name in a ", a, " model"),
                       {{"tensor", t.name}});
    }
    const bool q = mapped.name.find(".self_attn.q_proj.") != std::string::npos;
    const bool k = mapped.name.find(".self_attn.k_proj.") != std::string::npos;
    if (a == "llama" && (q || k) && !t.shape.empty()) {
      absl::StatusOr<std::vector<uint64_t>> rows = UnpermuteRows(t.shape.front(), q ? n_head : n_head_kv);
      if (!rows.ok()) return Annotate(rows.status(), absl::StrCat("tensor '", t.name, "'"));
      mapped.row_source = *std::move(rows);
    }
    out.tensors.emplace(t.name, std::move(mapped));
  }
  nlohmann::ordered_json config = {
      {"architectures", {hf_class}},
      {"model_type", a},
      {"hidden_size", **hidden},
      {"intermediate_size", **ffn},
      {"num_hidden_layers", **layers},
      {"num_attention_heads", n_head},
      {"num_key_value_heads", n_head_kv},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", !has_output},
  };
  if (vocab > 0) config["vocab_size"] = vocab;
  absl::StatusOr<std::optional<uint64_t>> key_length = unsigned_key(a + ".attention.key_length", false);
  if (!key_length.ok()) return key_length.status();
  if (*key_length) config["head_dim"] = **key_length;
  if (*context) config["max_position_embeddings"] = **context;
  if (std::optional<double> eps = float_key(a + ".attention.layer_norm_rms_epsilon")) config["rms_norm_eps"] = *eps;
  config["rope_theta"] = float_key(a + ".rope.freq_base").value_or(10000.0);
  if (llama3_scaling) {
    config["rope_scaling"] = {{"factor", llama3_scaling->factor},
                              {"high_freq_factor", llama3_scaling->high_freq_factor},
                              {"low_freq_factor", llama3_scaling->low_freq_factor},
                              {"original_max_position_embeddings", llama3_scaling->original_context},
                              {"rope_type", "llama3"}};
    if (std::trunc(llama3_scaling->original_context) == llama3_scaling->original_context)
      config["rope_scaling"]["original_max_position_embeddings"] =
          static_cast<uint64_t>(llama3_scaling->original_context);
  } else if (const GgufKv* kind = gguf.Find(a + ".rope.scaling.type"); kind != nullptr && kind->AsString()) {
    // linear and yarn, as hf_to_gguf writes them
    nlohmann::ordered_json scaling = nlohmann::ordered_json::object();
    if (std::optional<double> factor = float_key(a + ".rope.scaling.factor")) scaling["factor"] = *factor;
    absl::StatusOr<std::optional<uint64_t>> original = unsigned_key(a + ".rope.scaling.original_context_length", false);
    if (!original.ok()) return original.status();
    if (*original) scaling["original_max_position_embeddings"] = **original;
    scaling["rope_type"] = *kind->AsString();
    config["rope_scaling"] = std::move(scaling);
  }
  for (const char* id : {"bos", "eos"}) {
    const GgufKv* kv = gguf.Find(absl::StrCat("tokenizer.ggml.", id, "_token_id"));
    if (std::optional<uint64_t> v = kv ? kv->AsUnsigned() : std::nullopt) config[absl::StrCat(id, "_token_id")] = *v;
  }
  if (a == "gemma2" || a == "gemma3") {
    for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
      if (std::optional<double> cap = float_key(absl::StrCat(a, ".", key))) config[key] = *cap;
    }
    absl::StatusOr<std::optional<uint64_t>> window = unsigned_key(a + ".attention.sliding_window", false);
    if (!window.ok()) return window.status();
    if (*window) config["sliding_window"] = **window;
    config["hidden_activation"] = "gelu_pytorch_tanh";
    config["hidden_act"] = "gelu_pytorch_tanh";
    // llama.cpp scales Gemma 2's queries by 1/sqrt(head_dim) (except for the 27B size), which is
    // what this value means to transformers.
    if (config.contains("head_dim")) config["query_pre_attn_scalar"] = config["head_dim"];
    if (a == "gemma3") {  // what llama.cpp assumes for Gemma 3: local layers at base 10000, every sixth global
      config["rope_local_base_freq"] = 10000.0;
      config["sliding_window_pattern"] = 6;
    }
  }
  if (expert_count > 0) {
    absl::StatusOr<std::optional<uint64_t>> used = unsigned_key(a + ".expert_used_count", true);
    if (!used.ok()) return used.status();
    config["num_experts_per_tok"] = **used;
    if (a == "llama") {
      config["architectures"] = {"MixtralForCausalLM"};
      config["model_type"] = "mixtral";
      config["num_local_experts"] = expert_count;
    } else {
      config["num_experts"] = expert_count;
      config["model_type"] = "qwen3_moe";
      config["norm_topk_prob"] = true;  // llama.cpp's qwen3moe graph renormalises the top-k weights
      absl::StatusOr<std::optional<uint64_t>> moe_ffn = unsigned_key(a + ".expert_feed_forward_length", false);
      if (!moe_ffn.ok()) return moe_ffn.status();
      if (*moe_ffn) config["moe_intermediate_size"] = **moe_ffn;
    }
  }
  out.config = std::move(config);
  out.tokenizer_files = RebuildTokenizerFiles(gguf, out.architecture);
  return out;
}

}  // namespace modelsmith
