#include "workers/jobs/convert/gguf_tokenizer.h"

#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "sentencepiece/spm_model.pb.h"

namespace modelsmith {
namespace {

using ordered_json = nlohmann::ordered_json;

// llama.cpp's token types.
constexpr int32_t kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6;

struct Vocabulary {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<float> scores;  // empty for BPE
};

std::optional<Vocabulary> ReadVocabulary(const GgufFile& gguf, bool with_scores) {
  const GgufKv* tokens = gguf.Find("tokenizer.ggml.tokens");
  const GgufKv* types = gguf.Find("tokenizer.ggml.token_type");
  const GgufKv* scores = gguf.Find("tokenizer.ggml.scores");
  Vocabulary v;
  std::optional<std::vector<std::string>> t = tokens ? tokens->AsStringArray() : std::nullopt;
  std::optional<std::vector<int32_t>> y = types ? types->AsI32Array() : std::nullopt;
  if (!t || !y || y->size() != t->size() || t->empty()) return std::nullopt;
  v.tokens = *std::move(t);
  v.types = *std::move(y);
  if (with_scores) {
    std::optional<std::vector<float>> s = scores ? scores->AsF32Array() : std::nullopt;
    if (!s || s->size() != v.tokens.size()) return std::nullopt;
    v.scores = *std::move(s);
  }
  return v;
}

std::optional<uint64_t> TokenId(const GgufFile& gguf, absl::string_view name, size_t vocab_size) {
  const GgufKv* kv = gguf.Find(absl::StrCat("tokenizer.ggml.", name, "_token_id"));
  std::optional<uint64_t> id = kv ? kv->AsUnsigned() : std::nullopt;
  if (id && *id >= vocab_size) return std::nullopt;
  return id;
}

// The special tokens' contents, the add-BOS/EOS flags and the chat template.
ordered_json TokenizerConfig(const GgufFile& gguf, const Vocabulary& vocab, const char* tokenizer_class) {
  ordered_json config = ordered_json::object();
  for (const auto& [name, key] : kSpecialTokenKeys) {
    if (std::optional<uint64_t> id = TokenId(gguf, name, vocab.tokens.size())) config[key] = vocab.tokens[*id];
  }
  for (const char* flag : {"add_bos_token", "add_eos_token"}) {
    const GgufKv* kv = gguf.Find(absl::StrCat("tokenizer.ggml.", flag));
    if (kv != nullptr && kv->type == GgufValueType::kBool && !kv->value_bytes.empty())
      config[flag] = kv->value_bytes[0] != 0;
  }
  if (const GgufKv* kv = gguf.Find("tokenizer.chat_template"); kv != nullptr && kv->AsString())
    config["chat_template"] = *kv->AsString();
  config["tokenizer_class"] = tokenizer_class;
  return config;
}

ordered_json AddedToken(const std::string& content, bool special) {
  return {{"content", content}, {"single_word", false},   {"lstrip", false},
          {"rstrip", false},    {"normalized", !special}, {"special", special}};
}

TokenizerFiles RebuildBpe(const GgufFile& gguf) {
  std::optional<Vocabulary> vocab = ReadVocabulary(gguf, false);
  const GgufKv* merges_kv = gguf.Find("tokenizer.ggml.merges");
  std::optional<std::vector<std::string>> merges = merges_kv ? merges_kv->AsStringArray() : std::nullopt;
  if (!vocab || !merges) return {};
  const GgufKv* pre_kv = gguf.Find("tokenizer.ggml.pre");
  const std::string pre = pre_kv ? pre_kv->AsString().value_or("") : "";
  ordered_json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}};
  ordered_json pre_tokenizer;
  if (auto split = BpePreTokenizerSplits().find(pre); split != BpePreTokenizerSplits().end()) {
    byte_level["use_regex"] = false;
    pre_tokenizer = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", split->second}}}, {"behavior", "Isolated"}, {"invert", false}},
          byte_level}}};
  } else if (pre == "gpt-2") {
    byte_level["use_regex"] = true;
    pre_tokenizer = byte_level;
  } else {
    return {};  // no pre-tokenizer definition for it here
  }
  ordered_json tokens = ordered_json::object(), added = ordered_json::array();
  for (size_t id = 0; id < vocab->tokens.size(); ++id) {
    const int32_t type = vocab->types[id];
    if (type == kControl || type == kUserDefined) {
      ordered_json token = {{"id", id}};
      token.update(AddedToken(vocab->tokens[id], type == kControl));
      added.push_back(std::move(token));
    } else if (type != kUnused) {  // UNUSED holes are not tokens
      tokens[vocab->tokens[id]] = id;
    }
  }
  ordered_json decoder = {
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  ordered_json tokenizer = {{"version", "1.0"},
                            {"truncation", nullptr},
                            {"padding", nullptr},
                            {"added_tokens", added},
                            {"normalizer", nullptr},
                            {"pre_tokenizer", pre_tokenizer},
                            {"post_processor", nullptr},
                            {"decoder", decoder},
                            {"model",
                             {{"type", "BPE"},
                              {"dropout", nullptr},
                              {"unk_token", nullptr},
                              {"continuing_subword_prefix", nullptr},
                              {"end_of_word_suffix", nullptr},
                              {"fuse_unk", false},
                              {"byte_fallback", false},
                              {"ignore_merges", false},
                              {"vocab", tokens},
                              {"merges", *merges}}}};
  return {{"tokenizer.json", tokenizer.dump(2) + "\n"},
          {"tokenizer_config.json", TokenizerConfig(gguf, *vocab, "PreTrainedTokenizerFast").dump(2) + "\n"}};
}

// Where the SentencePiece model's own pieces end: before the trailing run of tokens the converter
// added (added tokens scored -1000, "[PAD<i>]" fill scored -10000).
size_t SentencePieceCount(const Vocabulary& vocab) {
  size_t n = vocab.tokens.size();
  while (n > 0) {
    const size_t i = n - 1;
    const bool added = (vocab.types[i] == kControl || vocab.types[i] == kUserDefined) && vocab.scores[i] == -1000.0f;
    const bool fill =
        vocab.types[i] == kUnused && vocab.scores[i] == -10000.0f && vocab.tokens[i] == absl::StrCat("[PAD", i, "]");
    if (!added && !fill) break;
    n = i;
  }
  return n;
}

TokenizerFiles RebuildSentencePiece(const GgufFile& gguf, const std::string& architecture) {
  std::optional<Vocabulary> vocab = ReadVocabulary(gguf, true);
  if (!vocab) return {};
  const size_t pieces = SentencePieceCount(*vocab);
  spm::ModelProto model;
  std::set<std::string> seen;
  int unknown = -1, bytes = 0;
  for (size_t i = 0; i < pieces; ++i) {
    const int32_t type = vocab->types[i];
    // SentencePiece refuses a model with an empty or repeated piece, a type it does not know, or
    // other than one unknown piece.
    if (vocab->tokens[i].empty() || !seen.insert(vocab->tokens[i]).second || type < kNormal || type > kByte) return {};
    if (type == kUnknown) {
      if (unknown >= 0) return {};
      unknown = static_cast<int>(i);
    }
    bytes += type == kByte;
    spm::ModelProto::SentencePiece* piece = model.add_pieces();
    piece->set_piece(vocab->tokens[i]);
    piece->set_score(vocab->scores[i]);
    piece->set_type(static_cast<spm::ModelProto::SentencePiece::Type>(type));
  }
  if (unknown < 0) return {};
  spm::TrainerSpec* trainer = model.mutable_trainer_spec();
  trainer->set_model_type(spm::TrainerSpec::BPE);
  trainer->set_vocab_size(static_cast<int32_t>(pieces));
  trainer->set_byte_fallback(bytes == 256);
  trainer->set_unk_id(unknown);
  trainer->set_unk_piece(vocab->tokens[unknown]);
  // The BOS/EOS/PAD ids SentencePiece knows: those among its pieces (control ones).
  auto special = [&](const char* name) -> int32_t {
    std::optional<uint64_t> id = TokenId(gguf, name, pieces);
    return id && vocab->types[*id] == kControl ? static_cast<int32_t>(*id) : -1;
  };
  const int32_t bos = special("bos"), eos = special("eos"), pad = special("padding");
  trainer->set_bos_id(bos);
  trainer->set_eos_id(eos);
  trainer->set_pad_id(pad);
  if (bos >= 0) trainer->set_bos_piece(vocab->tokens[bos]);
  if (eos >= 0) trainer->set_eos_piece(vocab->tokens[eos]);
  if (pad >= 0) trainer->set_pad_piece(vocab->tokens[pad]);
  // llama.cpp's SentencePiece tokenizer normalizes nothing but spaces: escaped to U+2581, never
  // collapsed, with a dummy prefix unless add_space_prefix says otherwise.
  spm::NormalizerSpec* normalizer = model.mutable_normalizer_spec();
  normalizer->set_name("identity");
  const GgufKv* prefix = gguf.Find("tokenizer.ggml.add_space_prefix");
  normalizer->set_add_dummy_prefix(prefix == nullptr || prefix->type != GgufValueType::kBool ||
                                   prefix->value_bytes.empty() || prefix->value_bytes[0] != 0);
  normalizer->set_remove_extra_whitespaces(false);
  normalizer->set_escape_whitespaces(true);

  ordered_json added_tokens = ordered_json::object(), decoder = ordered_json::object();
  for (size_t id = pieces; id < vocab->tokens.size(); ++id) {
    if (vocab->types[id] == kUnused) continue;  // "[PAD<i>]" fill, which the converter writes again
    added_tokens[vocab->tokens[id]] = id;
    decoder[std::to_string(id)] = AddedToken(vocab->tokens[id], vocab->types[id] == kControl);
  }
  const bool gemma = architecture.rfind("gemma", 0) == 0;
  ordered_json config = TokenizerConfig(gguf, *vocab, gemma ? "GemmaTokenizer" : "LlamaTokenizer");
  if (!decoder.empty()) config["added_tokens_decoder"] = decoder;
  TokenizerFiles files = {{"tokenizer.model", model.SerializeAsString()}};
  if (!added_tokens.empty()) files.emplace_back("added_tokens.json", added_tokens.dump(2) + "\n");
  files.emplace_back("tokenizer_config.json", config.dump(2) + "\n");
  return files;
}

}  // namespace

TokenizerFiles RebuildTokenizerFiles(const GgufFile& gguf, const std::string& architecture) {
  const GgufKv* model = gguf.Find("tokenizer.ggml.model");
  const std::string kind = model ? model->AsString().value_or("") : "";
  if (kind == "gpt2") return RebuildBpe(gguf);
  if (kind == "llama") return RebuildSentencePiece(gguf, architecture);
  return {};
}

const std::map<std::string, std::string>& BpePreTokenizerSplits() {
  static const auto* const splits = new std::map<std::string, std::string>{
      {"llama-bpe",
       R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
      {"qwen2",
       R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
      {"tekken",
       R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
  };
  return *splits;
}

}  // namespace modelsmith
