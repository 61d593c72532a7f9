#include "workers/jobs/convert/hf_to_gguf.h"

#include <algorithm>
#include <cmath>
#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"

#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "workers/common/error.h"
#include "workers/jobs/convert/gguf_to_hf.h"
#include "workers/jobs/convert/gguf_tokenizer.h"
#include "workers/jobs/convert/llama3_rope.h"
#include "workers/jobs/convert/spm_vocab.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxJsonBytes = 64 << 20;
enum TokenType : int32_t { kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5 };

absl::Status Refused(absl::StatusCode code, absl::string_view reason, absl::string_view field,
                     absl::string_view message) {
  return MakeError(code, reason, message, {{"field", std::string(field)}});
}

// The llama.cpp name of a Hugging Face tensor name, or empty (the table of gguf_to_hf.h, inverted).
std::string GgufName(const std::string& hf) {
  static const auto* const inverted = [] {
    auto* m = new std::pair<std::map<std::string, std::string>, std::map<std::string, std::string>>;
    for (const auto& [gguf, name] : LlamaTensorNames().top) m->first[name] = gguf;
    for (const auto& [gguf, name] : LlamaTensorNames().block) m->second[name] = gguf;
    return m;
  }();
  if (auto it = inverted->first.find(hf); it != inverted->first.end()) return it->second;
  // "model.layers.<N>.<name>.<weight|bias>", parsed by hand: tensor names come from the file.
  absl::string_view rest = hf;
  if (!absl::ConsumePrefix(&rest, "model.layers.")) return "";
  const size_t dot = rest.find('.');
  if (dot == 0 || dot == absl::string_view::npos) return "";
  const absl::string_view layer = rest.substr(0, dot);
  if (!std::all_of(layer.begin(), layer.end(), absl::ascii_isdigit)) return "";
  rest.remove_prefix(dot + 1);
  absl::string_view suffix;
  if (absl::ConsumeSuffix(&rest, ".weight")) {
    suffix = "weight";
  } else if (absl::ConsumeSuffix(&rest, ".bias")) {
    suffix = "bias";
  } else {
    return "";
  }
  if (rest.empty()) return "";
  auto it = inverted->second.find(std::string(rest));
  if (it == inverted->second.end()) return "";
  return absl::StrCat("blk.", layer, ".", it->second, ".", suffix);
}

// Phi-3 keeps llama.cpp's fused tensors as Hugging Face fuses them: qkv_proj is attn_qkv and
// gate_up_proj ([gate; up] rows, which llama.cpp's SwiGLU splits the same way) is ffn_up.
std::string Phi3GgufName(const std::string& hf) {
  return MapThroughProbe(hf, {{".self_attn.qkv_proj.", ".attn_qkv."}, {".mlp.gate_up_proj.", ".ffn_up."}},
                         ".self_attn.o_proj.", ".attn_output.", GgufName);
}

// A mixture-of-experts tensor: its layer, expert and llama.cpp stacked name. Mixtral's
// block_sparse_moe.experts.E.w1/w3/w2 and Qwen3-MoE's mlp.experts.E.gate_proj/up_proj/down_proj
// are the gate, up and down projections; a router (block_sparse_moe.gate, mlp.gate) is
// ffn_gate_inp.
struct ExpertName {
  std::string layer;
  uint64_t expert = 0;
  std::string stacked;  // "ffn_gate_exps" ...
};

std::optional<ExpertName> ParseExpertName(const std::string& hf) {
  static const std::map<std::string, std::string> kProjections = {
      {"w1", "ffn_gate_exps"},        {"w3", "ffn_up_exps"},      {"w2", "ffn_down_exps"},
      {"gate_proj", "ffn_gate_exps"}, {"up_proj", "ffn_up_exps"}, {"down_proj", "ffn_down_exps"}};
  const std::vector<std::string> parts = absl::StrSplit(hf, '.');
  // model.layers.N.block_sparse_moe.experts.E.w1.weight / model.layers.N.mlp.experts.E.gate_proj.weight
  if (parts.size() != 8 || parts[0] != "model" || parts[1] != "layers" || parts[7] != "weight" ||
      (parts[3] != "block_sparse_moe" && parts[3] != "mlp") || parts[4] != "experts")
    return std::nullopt;
  ExpertName name;
  auto projection = kProjections.find(parts[6]);
  if (projection == kProjections.end() || !absl::SimpleAtoi(parts[5], &name.expert) || parts[2].empty() ||
      !std::all_of(parts[2].begin(), parts[2].end(), absl::ascii_isdigit))
    return std::nullopt;
  name.layer = parts[2];
  name.stacked = projection->second;
  return name;
}

// "blk.N.ffn_gate_inp.weight" for a router's name, else empty.
std::string RouterName(const std::string& hf) {
  const std::vector<std::string> parts = absl::StrSplit(hf, '.');
  if (parts.size() == 6 && parts[0] == "model" && parts[1] == "layers" && parts[4] == "gate" && parts[5] == "weight" &&
      (parts[3] == "block_sparse_moe" || parts[3] == "mlp") && !parts[2].empty() &&
      std::all_of(parts[2].begin(), parts[2].end(), absl::ascii_isdigit))
    return absl::StrCat("blk.", parts[2], ".ffn_gate_inp.weight");
  return "";
}

// Gemma 2 has four norms per layer: input (attn_norm), post-attention (post_attention_norm),
// pre-feed-forward (ffn_norm) and post-feed-forward (post_ffw_norm); the rest is Llama's.
std::string Gemma2GgufName(const std::string& hf) {
  return MapThroughProbe(hf,
                         {{".post_attention_layernorm.", ".post_attention_norm."},
                          {".pre_feedforward_layernorm.", ".ffn_norm."},
                          {".post_feedforward_layernorm.", ".post_ffw_norm."}},
                         ".input_layernorm.", ".attn_norm.", GgufName);
}

std::optional<uint64_t> Unsigned(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || !it->is_number_unsigned()) return std::nullopt;
  return it->get<uint64_t>();
}

std::optional<double> Number(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

// gguf-py's model_weight_count_rounded_notation: the count scaled to K/M/B/T with at least two
// significant digits ("98K", "8.0B", "1.1B").
std::string RoundedCount(double count) {
  const auto [scaled, suffix] = count > 1e12  ? std::pair{count * 1e-12, "T"}
                                : count > 1e9 ? std::pair{count * 1e-9, "B"}
                                : count > 1e6 ? std::pair{count * 1e-6, "M"}
                                              : std::pair{count * 1e-3, "K"};
  // Python's round() and format: ties to even, as nearbyint and printf round by default. The
  // rounded value's digits ("0" has none, as Python's lstrip('0') leaves it).
  const int64_t rounded = static_cast<int64_t>(std::nearbyint(scaled));
  const int digits = rounded == 0 ? 0 : static_cast<int>(absl::StrCat(rounded).size());
  const int fix = std::max(2 - digits, 0);
  return absl::StrCat(absl::StrFormat("%.*f", fix, scaled), suffix);
}

std::string SizeLabel(const std::vector<GgufOutputTensor>& tensors) {
  uint64_t total = 0, shared = 0, expert = 0, expert_sum = 0, expert_tensors = 0;
  for (const GgufOutputTensor& t : tensors) {
    uint64_t size = t.source == nullptr ? t.computed.size() : ElementCount(t.source->shape).value_or(0);
    if (!t.stacked.empty()) {
      size *= t.stacked.size();
      expert += size / t.stacked.size();
      expert_sum += t.stacked.size();
      ++expert_tensors;
    } else {
      shared += size;
    }
    total += size;
  }
  const uint64_t experts = expert_tensors > 0 ? expert_sum / expert_tensors : 0;
  if (experts > 0) return absl::StrCat(experts, "x", RoundedCount(static_cast<double>(shared + expert)));
  return RoundedCount(static_cast<double>(total));
}

// Llama 3's rope_scaling as llama3_rope.h takes it; MODEL_CONFIG_INVALID when a parameter is
// missing or the head size is odd.
absl::StatusOr<Llama3RopeScaling> Llama3Scaling(const json& config, uint64_t head_dim) {
  const json& scaling = config["rope_scaling"];
  const std::optional<double> factor = Number(scaling, "factor"), low = Number(scaling, "low_freq_factor"),
                              high = Number(scaling, "high_freq_factor"),
                              old_context = Number(scaling, "original_max_position_embeddings");
  if (!factor || !low || !high || !old_context || *high == *low || head_dim == 0 || head_dim % 2 != 0) {
    return MakeError(absl::StatusCode::kInvalidArgument, "MODEL_CONFIG_INVALID",
                     "rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor (different) and "
                     "original_max_position_embeddings, and an even head size",
                     {{"field", "convert.input"}});
  }
  return Llama3RopeScaling{*factor, *low, *high, *old_context};
}

// llama.cpp's pre-tokenizer names by split regex (gguf_to_hf.h's table, inverted).
const std::map<std::string, std::string>& KnownPreTokenizers() {
  static const auto* const known = [] {
    auto* m = new std::map<std::string, std::string>;
    for (const auto& [name, regex] : BpePreTokenizerSplits()) (*m)[regex] = name;
    return m;
  }();
  return *known;
}

// tokenizer.ggml.pre from the pre-tokenizer definition; nullopt when it is not a known one.
std::optional<std::string> PreTokenizer(const json& pre) {
  std::vector<const json*> steps;
  if (pre.value("type", "") == "Sequence") {
    auto list = pre.find("pretokenizers");  // steps point into `pre`, which outlives them
    if (list == pre.end() || !list->is_array()) return std::nullopt;
    for (const json& step : *list) steps.push_back(&step);
  } else if (pre.is_object()) {
    steps.push_back(&pre);
  }
  std::optional<std::string> name;
  for (const json* step : steps) {
    if (!step->is_object()) return std::nullopt;
    const std::string type = step->value("type", "");
    if (type == "Split") {
      const json pattern = step->value("pattern", json::object());
      if (!pattern.is_object() || !pattern.contains("Regex") || !pattern["Regex"].is_string() || name)
        return std::nullopt;
      auto known = KnownPreTokenizers().find(pattern["Regex"].get<std::string>());
      if (known == KnownPreTokenizers().end()) return std::nullopt;
      name = known->second;
    } else if (type == "ByteLevel") {
      // Its own regex is GPT-2's; with a Split before it, it must not split again.
      const bool own_regex = step->value("use_regex", true);
      if (own_regex && name) return std::nullopt;
      if (own_regex) name = "gpt-2";
    } else if (type != "Digits" || name) {
      return std::nullopt;
    }
  }
  return name;
}

// The content of a special token entry of tokenizer_config.json (a string or {"content": ...}).
std::optional<std::string> SpecialContent(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

void AddSpecialTokens(const HfFiles& files, const std::map<std::string, int64_t>& id_of, uint64_t vocab_size,
                      std::vector<GgufKv>& kvs);

absl::Status AddSentencePieceTokenizer(const HfFiles& files, uint64_t vocab_size, std::vector<GgufKv>& kvs) {
  absl::StatusOr<SpmVocab> vocab =
      ReadSpmVocab(*files.sentencepiece_model, vocab_size, files.added_tokens, files.tokenizer, files.tokenizer_config);
  if (!vocab.ok()) return vocab.status();
  kvs.push_back(GgufKv::String("tokenizer.ggml.model", "llama"));
  kvs.push_back(GgufKv::String("tokenizer.ggml.pre", "default"));
  kvs.push_back(GgufKv::StringArray("tokenizer.ggml.tokens", vocab->tokens));
  kvs.push_back(GgufKv::F32Array("tokenizer.ggml.scores", vocab->scores));
  kvs.push_back(GgufKv::I32Array("tokenizer.ggml.token_type", vocab->types));
  if (!vocab->add_space_prefix) kvs.push_back(GgufKv::Bool("tokenizer.ggml.add_space_prefix", false));
  std::map<std::string, int64_t> id_of;
  for (size_t i = 0; i < vocab->tokens.size(); ++i) id_of.try_emplace(vocab->tokens[i], static_cast<int64_t>(i));
  AddSpecialTokens(files, id_of, vocab->tokens.size(), kvs);
  return absl::OkStatus();
}

absl::Status AddTokenizer(const HfFiles& files, uint64_t vocab_size, const std::string& tokenizer_pre,
                          std::vector<GgufKv>& kvs) {
  if (files.sentencepiece_model) return AddSentencePieceTokenizer(files, vocab_size, kvs);
  if (!files.tokenizer) {
    return Refused(absl::StatusCode::kFailedPrecondition, "TOKENIZER_MISSING", "convert.input",
                   "llama.cpp needs the vocabulary: put the model's tokenizer.json or tokenizer.model beside its "
                   "weights");
  }
  const json& tok = *files.tokenizer;
  const json model = tok.value("model", json::object());
  if (model.value("type", "") != "BPE" || !model.contains("vocab") || !model["vocab"].is_object()) {
    return Refused(absl::StatusCode::kUnimplemented, "TOKENIZER_UNSUPPORTED", "convert.input",
                   absl::StrCat("tokenizer.json holds a '", model.value("type", "?"),
                                "' model; only BPE tokenizers (Llama 3, Mistral Nemo, Qwen2) are converted"));
  }
  std::map<int64_t, std::string> by_id;
  std::map<std::string, int64_t> id_of;
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer())
      return Refused(absl::StatusCode::kInvalidArgument, "TOKENIZER_INVALID", "convert.input",
                     "a vocab id is not an integer");
    by_id[id.get<int64_t>()] = token;
    id_of[token] = id.get<int64_t>();
  }
  std::map<int64_t, bool> added_special;
  for (const json& added : tok.value("added_tokens", json::array())) {
    if (!added.is_object() || !added.contains("id") || !added["id"].is_number_integer() || !added.contains("content"))
      continue;
    const int64_t id = added["id"].get<int64_t>();
    by_id[id] = added["content"].get<std::string>();
    id_of[by_id[id]] = id;
    added_special[id] = added.value("special", false);
  }
  if (vocab_size == 0) vocab_size = by_id.empty() ? 0 : static_cast<uint64_t>(by_id.rbegin()->first) + 1;
  if (vocab_size > (1u << 24))
    return Refused(absl::StatusCode::kInvalidArgument, "TOKENIZER_INVALID", "convert.input", "vocabulary too large");
  std::vector<std::string> tokens(vocab_size);
  std::vector<int32_t> types(vocab_size);
  for (uint64_t i = 0; i < vocab_size; ++i) {
    auto it = by_id.find(static_cast<int64_t>(i));
    if (it == by_id.end()) {
      tokens[i] = absl::StrCat("[PAD", i, "]");
      types[i] = kUnused;
    } else {
      tokens[i] = it->second;
      auto added = added_special.find(static_cast<int64_t>(i));
      types[i] = added == added_special.end() ? kNormal : added->second ? kControl : kUserDefined;
    }
  }
  std::vector<std::string> merges;
  for (const json& merge : model.value("merges", json::array())) {
    if (merge.is_string())
      merges.push_back(merge.get<std::string>());
    else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      merges.push_back(absl::StrCat(merge[0].get<std::string>(), " ", merge[1].get<std::string>()));
    }
  }
  kvs.push_back(GgufKv::String("tokenizer.ggml.model", "gpt2"));
  std::optional<std::string> pre = tokenizer_pre.empty() ? PreTokenizer(tok.value("pre_tokenizer", json::object()))
                                                         : std::optional<std::string>(tokenizer_pre);
  if (!pre) {
    return Refused(absl::StatusCode::kFailedPrecondition, "TOKENIZER_PRE_UNKNOWN", "convert.tokenizer_pre",
                   "tokenizer.json's pre-tokenizer is not one this converter recognises (Llama 3 'llama-bpe', "
                   "Qwen2/Qwen3 'qwen2', Mistral Nemo 'tekken', GPT-2 'gpt-2'); llama.cpp tokenizes differently per "
                   "pre-tokenizer, so name it with tokenizer_pre (CLI --tokenizer-pre)");
  }
  kvs.push_back(GgufKv::String("tokenizer.ggml.pre", *pre));
  kvs.push_back(GgufKv::StringArray("tokenizer.ggml.tokens", tokens));
  kvs.push_back(GgufKv::I32Array("tokenizer.ggml.token_type", types));
  kvs.push_back(GgufKv::StringArray("tokenizer.ggml.merges", merges));
  AddSpecialTokens(files, id_of, vocab_size, kvs);
  return absl::OkStatus();
}

// BOS/EOS/UNK/PAD ids (tokenizer_config.json's contents looked up in the vocabulary, else
// config.json's ids), the add-BOS/EOS flags and the chat template.
void AddSpecialTokens(const HfFiles& files, const std::map<std::string, int64_t>& id_of, uint64_t vocab_size,
                      std::vector<GgufKv>& kvs) {
  const json tokenizer_config = files.tokenizer_config.value_or(json::object());
  for (const SpecialTokenKey& special : kSpecialTokenKeys) {
    const std::string name = special.gguf;
    std::optional<int64_t> id;
    if (std::optional<std::string> content = SpecialContent(tokenizer_config, special.config)) {
      if (auto it = id_of.find(*content); it != id_of.end()) id = it->second;
    }
    if (!id && name != "unknown") {
      const std::string config_key = absl::StrCat(name == "padding" ? "pad" : name, "_token_id");
      if (std::optional<uint64_t> v = Unsigned(files.config, config_key.c_str())) id = static_cast<int64_t>(*v);
    }
    if (id && *id >= 0 && static_cast<uint64_t>(*id) < vocab_size) {
      kvs.push_back(GgufKv::U32(absl::StrCat("tokenizer.ggml.", name, "_token_id"), static_cast<uint32_t>(*id)));
    }
  }
  for (const char* flag : {"add_bos_token", "add_eos_token"}) {
    if (auto it = tokenizer_config.find(flag); it != tokenizer_config.end() && it->is_boolean()) {
      kvs.push_back(GgufKv::Bool(absl::StrCat("tokenizer.ggml.", flag), it->get<bool>()));
    }
  }
  if (auto it = tokenizer_config.find("chat_template"); it != tokenizer_config.end() && it->is_string()) {
    kvs.push_back(GgufKv::String("tokenizer.chat_template", it->get<std::string>()));
  }
}

}  // namespace

absl::StatusOr<std::vector<uint64_t>> PermuteRows(uint64_t rows, uint64_t heads) {
  // The inverse of the GGUF-to-HF order.
  absl::StatusOr<std::vector<uint64_t>> back = UnpermuteRows(rows, heads);
  if (!back.ok()) return back.status();
  std::vector<uint64_t> source(rows);
  for (uint64_t hf_row = 0; hf_row < rows; ++hf_row) source[(*back)[hf_row]] = hf_row;
  return source;
}

absl::StatusOr<HfFiles> ReadHfFiles(ObjectStore& store, const ModelView& model) {
  const std::string dir(ParentUri(model.files.front().uri));
  HfFiles files;
  absl::StatusOr<std::optional<json>> config = ReadJsonObject(store, JoinUri(dir, "config.json"), kMaxJsonBytes);
  if (!config.ok()) return config.status();
  if (!*config) {
    return Refused(absl::StatusCode::kFailedPrecondition, "MODEL_CONFIG_MISSING", "convert.input",
                   absl::StrCat("no config.json beside '", model.uri, "'; GGUF metadata comes from it"));
  }
  files.config = **config;
  absl::StatusOr<std::optional<json>> tokenizer = ReadJsonObject(store, JoinUri(dir, "tokenizer.json"), kMaxJsonBytes);
  if (!tokenizer.ok()) return tokenizer.status();
  files.tokenizer = *tokenizer;
  absl::StatusOr<std::optional<json>> tokenizer_config =
      ReadJsonObject(store, JoinUri(dir, "tokenizer_config.json"), kMaxJsonBytes);
  if (!tokenizer_config.ok()) return tokenizer_config.status();
  files.tokenizer_config = *tokenizer_config;
  absl::StatusOr<std::optional<json>> added_tokens =
      ReadJsonObject(store, JoinUri(dir, "added_tokens.json"), kMaxJsonBytes);
  if (!added_tokens.ok()) return added_tokens.status();
  files.added_tokens = *added_tokens;
  absl::StatusOr<std::optional<std::string>> spm =
      ReadSmallObject(store, JoinUri(dir, "tokenizer.model"), kMaxJsonBytes, "TOKENIZER_INVALID");
  if (!spm.ok()) return spm.status();
  files.sentencepiece_model = *std::move(spm);
  return files;
}

absl::StatusOr<HfToGguf> MapHfToGguf(const ModelView& model, const HfFiles& files, GgmlType type,
                                     const std::string& name, const std::string& tokenizer_pre) {
  const json& config = files.config;
  std::string architecture;
  if (config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty() &&
      config["architectures"][0].is_string()) {
    architecture = config["architectures"][0].get<std::string>();
  }
  HfToGguf out;
  if (architecture == "LlamaForCausalLM" || architecture == "MistralForCausalLM" ||
      architecture == "MixtralForCausalLM")
    out.architecture = "llama";
  if (architecture == "Qwen3MoeForCausalLM") out.architecture = "qwen3moe";
  if (architecture == "Qwen2ForCausalLM") out.architecture = "qwen2";
  if (architecture == "Qwen3ForCausalLM") out.architecture = "qwen3";
  if (architecture == "Phi3ForCausalLM") out.architecture = "phi3";
  if (architecture == "Gemma2ForCausalLM") out.architecture = "gemma2";
  if (architecture == "Gemma3ForCausalLM") out.architecture = "gemma3";
  if (out.architecture.empty()) {
    return Refused(absl::StatusCode::kUnimplemented, "ARCHITECTURE_UNSUPPORTED", "convert.input",
                   absl::StrCat("config.json architecture '", architecture,
                                "' is not converted to GGUF; LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM, "
                                "Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM, Phi3ForCausalLM, "
                                "Gemma2ForCausalLM and Gemma3ForCausalLM are"));
  }
  const std::string a = out.architecture;
  const std::optional<uint64_t> hidden = Unsigned(config, "hidden_size");
  const std::optional<uint64_t> layers = Unsigned(config, "num_hidden_layers");
  const std::optional<uint64_t> ffn = Unsigned(config, "intermediate_size");
  const std::optional<uint64_t> heads = Unsigned(config, "num_attention_heads");
  if (!hidden || !layers || !ffn || !heads || *heads == 0) {
    return Refused(absl::StatusCode::kInvalidArgument, "MODEL_CONFIG_INVALID", "convert.input",
                   "config.json lacks hidden_size, num_hidden_layers, intermediate_size or num_attention_heads");
  }
  const uint64_t heads_kv = Unsigned(config, "num_key_value_heads").value_or(*heads);
  const uint64_t head_dim = Unsigned(config, "head_dim").value_or(*hidden / *heads);
  uint64_t vocab = Unsigned(config, "vocab_size").value_or(0);
  if (config.contains("rope_scaling") && config["rope_scaling"].is_object()) {
    const json& scaling = config["rope_scaling"];
    const std::string kind = scaling.value("rope_type", scaling.value("type", ""));
    if (kind != "linear" && kind != "yarn" && !(kind == "llama3" && architecture == "LlamaForCausalLM")) {
      return Refused(absl::StatusCode::kUnimplemented, "ROPE_SCALING_UNSUPPORTED", "convert.input",
                     absl::StrCat("rope_scaling type '", kind,
                                  "' is not converted (linear, yarn, and llama3 for LlamaForCausalLM are)"));
    }
    if (kind == "llama3") {
      absl::StatusOr<Llama3RopeScaling> scaling = Llama3Scaling(config, head_dim);
      if (!scaling.ok()) return scaling.status();
      GgufOutputTensor freqs;
      freqs.name = "rope_freqs.weight";
      freqs.type = GgmlType::kF32;
      freqs.computed = Llama3RopeFactors(*scaling, Number(config, "rope_theta").value_or(10000.0), head_dim);
      out.tensors.push_back(std::move(freqs));  // first, as the converter yields it
    }
  }

  std::vector<GgufKv>& kvs = out.kvs;
  kvs.push_back(GgufKv::String("general.architecture", a));
  kvs.push_back(GgufKv::String("general.type", "model"));  // the converter's set_type, before the model card keys
  kvs.push_back(GgufKv::String("general.name", name));
  if (std::optional<uint64_t> context = Unsigned(config, "max_position_embeddings")) {
    kvs.push_back(GgufKv::U32(a + ".context_length", static_cast<uint32_t>(*context)));
  }
  kvs.push_back(GgufKv::U32(a + ".embedding_length", static_cast<uint32_t>(*hidden)));
  kvs.push_back(GgufKv::U32(a + ".block_count", static_cast<uint32_t>(*layers)));
  kvs.push_back(GgufKv::U32(a + ".feed_forward_length", static_cast<uint32_t>(*ffn)));
  kvs.push_back(GgufKv::U32(a + ".attention.head_count", static_cast<uint32_t>(*heads)));
  kvs.push_back(GgufKv::U32(a + ".attention.head_count_kv", static_cast<uint32_t>(heads_kv)));
  if (std::optional<double> theta = Number(config, "rope_theta"))
    kvs.push_back(GgufKv::F32(a + ".rope.freq_base", static_cast<float>(*theta)));
  if (std::optional<double> eps = Number(config, "rms_norm_eps")) {
    kvs.push_back(GgufKv::F32(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(*eps)));
  }
  kvs.push_back(GgufKv::U32(a + ".rope.dimension_count", static_cast<uint32_t>(head_dim)));
  // An explicit head_dim (Qwen3's differs from hidden / heads) is the key and value length, as
  // llama.cpp's converter writes it for any model that states one.
  if (Unsigned(config, "head_dim")) {
    kvs.push_back(GgufKv::U32(a + ".attention.key_length", static_cast<uint32_t>(head_dim)));
    kvs.push_back(GgufKv::U32(a + ".attention.value_length", static_cast<uint32_t>(head_dim)));
  }
  if (config.contains("rope_scaling") && config["rope_scaling"].is_object() &&
      config["rope_scaling"].value("rope_type", config["rope_scaling"].value("type", "")) != "llama3") {
    const json& scaling = config["rope_scaling"];
    kvs.push_back(GgufKv::String(a + ".rope.scaling.type", scaling.value("rope_type", scaling.value("type", ""))));
    if (std::optional<double> factor = Number(scaling, "factor"))
      kvs.push_back(GgufKv::F32(a + ".rope.scaling.factor", static_cast<float>(*factor)));
    if (std::optional<uint64_t> original = Unsigned(scaling, "original_max_position_embeddings")) {
      kvs.push_back(GgufKv::U32(a + ".rope.scaling.original_context_length", static_cast<uint32_t>(*original)));
    }
  }

  if (a == "gemma2" || a == "gemma3") {  // soft-capping and the sliding window, as the converter writes them
    if (std::optional<double> cap = Number(config, "attn_logit_softcapping"))
      kvs.push_back(GgufKv::F32(a + ".attn_logit_softcapping", static_cast<float>(*cap)));
    if (std::optional<double> cap = Number(config, "final_logit_softcapping"))
      kvs.push_back(GgufKv::F32(a + ".final_logit_softcapping", static_cast<float>(*cap)));
    if (std::optional<uint64_t> window = Unsigned(config, "sliding_window"))
      kvs.push_back(GgufKv::U32(a + ".attention.sliding_window", static_cast<uint32_t>(*window)));
  }
  // Experts: counts from config.json (Mixtral num_local_experts, Qwen3-MoE num_experts).
  const uint64_t experts = Unsigned(config, "num_local_experts").value_or(Unsigned(config, "num_experts").value_or(0));
  if (experts > 0) {
    kvs.push_back(GgufKv::U32(a + ".expert_count", static_cast<uint32_t>(experts)));
    kvs.push_back(GgufKv::U32(a + ".expert_used_count",
                              static_cast<uint32_t>(Unsigned(config, "num_experts_per_tok").value_or(0))));
    if (std::optional<uint64_t> moe_ffn = Unsigned(config, "moe_intermediate_size"))
      kvs.push_back(GgufKv::U32(a + ".expert_feed_forward_length", static_cast<uint32_t>(*moe_ffn)));
  }
  std::map<std::string, std::pair<size_t, std::map<uint64_t, const TensorInfo*>>> stacks;  // name -> (slot, experts)
  for (const TensorInfo& t : model.tensors) {
    if (std::optional<ExpertName> expert = ParseExpertName(t.name); expert && experts > 0) {
      const std::string stacked = absl::StrCat("blk.", expert->layer, ".", expert->stacked, ".weight");
      auto [it, added] = stacks.try_emplace(stacked, out.tensors.size(), std::map<uint64_t, const TensorInfo*>{});
      if (added) out.tensors.push_back(GgufOutputTensor{&t, stacked, GgmlType::kF16, {}, {}});
      if (!it->second.second.emplace(expert->expert, &t).second || expert->expert >= experts) {
        return MakeError(absl::StatusCode::kInvalidArgument, "TENSOR_UNMAPPED",
                         absl::StrCat("expert tensor '", t.name, "' repeats an expert or exceeds the ", experts,
                                      " experts config.json declares"),
                         {{"tensor", t.name}});
      }
      continue;
    }
    GgufOutputTensor g;
    g.source = &t;
    const bool gemma = a == "gemma2" || a == "gemma3";
    g.name = a == "phi3" ? Phi3GgufName(t.name) : gemma ? Gemma2GgufName(t.name) : GgufName(t.name);
    if (gemma) {
      if (t.name == "lm_head.weight") continue;                 // tied to the embeddings, as the converter skips it
      if (absl::EndsWith(t.name, "norm.weight")) g.add = 1.0f;  // Gemma's RMSNorm scales by 1 + w
    }
    if (g.name.empty() && experts > 0) g.name = RouterName(t.name);
    if (g.name.empty()) {
      if (t.name.find("rotary_emb.inv_freq") != std::string::npos)
        continue;  // recomputed by llama.cpp, as the converter skips it
      return MakeError(absl::StatusCode::kInvalidArgument, "TENSOR_UNMAPPED",
                       absl::StrCat("tensor '", t.name, "' has no llama.cpp name in a ", architecture, " model"),
                       {{"tensor", t.name}});
    }
    if (t.name == "model.embed_tokens.weight" && !t.shape.empty() && vocab == 0) vocab = t.shape.front();
    const bool q = g.name.find(".attn_q.") != std::string::npos;
    const bool k = g.name.find(".attn_k.") != std::string::npos;
    if (a == "llama" && (q || k) && !t.shape.empty()) {
      absl::StatusOr<std::vector<uint64_t>> rows = PermuteRows(t.shape.front(), q ? *heads : heads_kv);
      if (!rows.ok()) return Annotate(rows.status(), absl::StrCat("tensor '", t.name, "'"));
      g.row_source = *std::move(rows);
    }
    const std::optional<uint64_t> row_bytes = t.shape.empty() ? std::nullopt : GgmlRowBytes(type, t.shape.back());
    g.type = t.shape.size() <= 1 ? GgmlType::kF32 : row_bytes ? type : GgmlType::kF16;
    out.tensors.push_back(std::move(g));
  }
  for (const auto& [name, slot_and_experts] : stacks) {
    const auto& [slot, by_expert] = slot_and_experts;
    GgufOutputTensor& g = out.tensors[slot];
    for (uint64_t e = 0; e < experts; ++e) {
      auto it = by_expert.find(e);
      if (it == by_expert.end()) {
        return MakeError(absl::StatusCode::kInvalidArgument, "TENSOR_MISSING",
                         absl::StrCat("'", name, "' needs expert ", e, " of ", experts, ", which the checkpoint lacks"),
                         {{"tensor", name}});
      }
      if (it->second->shape != g.source->shape || it->second->dtype != g.source->dtype) {
        return MakeError(absl::StatusCode::kInvalidArgument, "TENSOR_SHAPE_MISMATCH",
                         absl::StrCat("expert tensor '", it->second->name, "' differs in shape or dtype from '",
                                      g.source->name, "'"),
                         {{"tensor", it->second->name}});
      }
      g.stacked.push_back(it->second);
    }
    g.source = g.stacked.front();
    const std::optional<uint64_t> row_bytes = GgmlRowBytes(type, g.source->shape.back());
    g.type = row_bytes ? type : GgmlType::kF16;
  }
  kvs.push_back(GgufKv::U32(a + ".vocab_size", static_cast<uint32_t>(vocab)));
  if (absl::Status s = AddTokenizer(files, vocab, tokenizer_pre, kvs); !s.ok()) return s;
  // The model card keys follow general.name; of them only the size label is derived from the
  // weights themselves (the others come from a README and the directory name).
  auto name_kv = std::find_if(kvs.begin(), kvs.end(), [](const GgufKv& kv) { return kv.key == "general.name"; });
  kvs.insert(name_kv == kvs.end() ? kvs.end() : name_kv + 1,
             GgufKv::String("general.size_label", SizeLabel(out.tensors)));
  return out;
}

}  // namespace modelsmith
