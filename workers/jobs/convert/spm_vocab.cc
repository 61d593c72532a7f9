#include "workers/jobs/convert/spm_vocab.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "sentencepiece/spm_model.pb.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

using nlohmann::json;

constexpr int32_t kUnused = 5, kUserDefined = 4, kControl = 3;
constexpr uint64_t kMaxVocab = uint64_t{1} << 24;

absl::Status Invalid(absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, "TOKENIZER_INVALID", message, {{"field", "convert.input"}});
}

void SetAdded(SpmVocab& vocab, int64_t id, const std::string& content, bool special) {
  if (id < 0 || static_cast<uint64_t>(id) >= vocab.tokens.size()) return;  // past the vocabulary: dropped
  vocab.tokens[id] = content;
  vocab.scores[id] = -1000.0f;
  vocab.types[id] = special ? kControl : kUserDefined;
}

}  // namespace

absl::StatusOr<SpmVocab> ReadSpmVocab(const std::string& model_bytes, uint64_t vocab_size,
                                      const std::optional<json>& added_tokens_json,
                                      const std::optional<json>& tokenizer_json,
                                      const std::optional<json>& tokenizer_config) {
  spm::ModelProto model;
  if (!model.ParseFromString(model_bytes) || model.pieces_size() == 0)
    return Invalid("tokenizer.model is not a SentencePiece model (it does not parse, or has no pieces)");
  if (vocab_size == 0) vocab_size = static_cast<uint64_t>(model.pieces_size());
  if (vocab_size > kMaxVocab) return Invalid("vocabulary too large");
  SpmVocab vocab;
  vocab.tokens.resize(vocab_size);
  vocab.scores.assign(vocab_size, -10000.0f);
  vocab.types.assign(vocab_size, kUnused);
  for (uint64_t i = 0; i < vocab_size; ++i) vocab.tokens[i] = absl::StrCat("[PAD", i, "]");
  for (int i = 0; i < model.pieces_size() && static_cast<uint64_t>(i) < vocab_size; ++i) {
    const spm::ModelProto::SentencePiece& piece = model.pieces(i);
    vocab.tokens[i] = piece.piece();
    vocab.scores[i] = piece.score();
    vocab.types[i] = static_cast<int32_t>(piece.type());
  }
  if (added_tokens_json && added_tokens_json->is_object()) {
    for (const auto& [content, id] : added_tokens_json->items()) {
      if (id.is_number_integer()) SetAdded(vocab, id.get<int64_t>(), content, false);
    }
  }
  if (tokenizer_json) {
    for (const json& added : tokenizer_json->value("added_tokens", json::array())) {
      if (added.is_object() && added.contains("id") && added["id"].is_number_integer() && added.contains("content") &&
          added["content"].is_string() && added["id"].get<int64_t>() >= model.pieces_size())
        SetAdded(vocab, added["id"].get<int64_t>(), added["content"].get<std::string>(), added.value("special", false));
    }
  }
  if (tokenizer_config) {
    // Held here: items() of the temporary value() returns would dangle in the loop.
    const json decoder = tokenizer_config->value("added_tokens_decoder", json::object());
    for (const auto& [id_text, data] : decoder.items()) {
      int64_t id = 0;
      if (!absl::SimpleAtoi(id_text, &id) || !data.is_object() || !data.contains("content") ||
          !data["content"].is_string() || id < model.pieces_size())
        continue;
      SetAdded(vocab, id, data["content"].get<std::string>(), data.value("special", false));
    }
  }
  vocab.add_space_prefix = model.normalizer_spec().add_dummy_prefix();
  vocab.unk_id = model.trainer_spec().unk_id();
  vocab.bos_id = model.trainer_spec().bos_id();
  vocab.eos_id = model.trainer_spec().eos_id();
  vocab.pad_id = model.trainer_spec().pad_id();
  return vocab;
}

}  // namespace modelsmith
