// A SentencePiece vocabulary both ways: tokenizer.model (+ added tokens) -> GGUF metadata as
// llama.cpp's converter writes it (spm_vocab.h), and GGUF metadata -> tokenizer.model,
// added_tokens.json and tokenizer_config.json (gguf_tokenizer.h), which must read back to the same
// tokens, scores and types.
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "sentencepiece/spm_model.pb.h"
#include "workers/common/error.h"
#include "workers/jobs/convert/gguf_tokenizer.h"
#include "workers/jobs/convert/spm_vocab.h"

namespace modelsmith {
namespace {

using nlohmann::json;

// <unk> <s> </s>, 256 byte pieces, then four normal pieces.
std::string SpmModel(bool dummy_prefix = true) {
  spm::ModelProto model;
  auto add = [&](const std::string& piece, float score, spm::ModelProto::SentencePiece::Type type) {
    spm::ModelProto::SentencePiece* p = model.add_pieces();
    p->set_piece(piece);
    p->set_score(score);
    p->set_type(type);
  };
  add("<unk>", 0, spm::ModelProto::SentencePiece::UNKNOWN);
  add("<s>", 0, spm::ModelProto::SentencePiece::CONTROL);
  add("</s>", 0, spm::ModelProto::SentencePiece::CONTROL);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    add(name, 0, spm::ModelProto::SentencePiece::BYTE);
  }
  add("\xe2\x96\x81t", -1, spm::ModelProto::SentencePiece::NORMAL);
  add("he", -2, spm::ModelProto::SentencePiece::NORMAL);
  add("\xe2\x96\x81the", -3, spm::ModelProto::SentencePiece::NORMAL);
  add("<ctrl>", 0, spm::ModelProto::SentencePiece::USER_DEFINED);
  model.mutable_normalizer_spec()->set_add_dummy_prefix(dummy_prefix);
  return model.SerializeAsString();
}

constexpr uint64_t kPieces = 3 + 256 + 4;

// Two added tokens after two "[PAD<i>]" holes: one special (CONTROL), one not (USER_DEFINED).
struct Added {
  json added_tokens = {{"<|user|>", kPieces + 2}, {"<|tool|>", kPieces + 3}};
  json tokenizer_config = {
      {"bos_token", "<s>"},
      {"eos_token", "</s>"},
      {"unk_token", "<unk>"},
      {"add_bos_token", true},
      {"chat_template", "{{ messages }}"},
      {"added_tokens_decoder", {{std::to_string(kPieces + 2), {{"content", "<|user|>"}, {"special", true}}}}}};
};

GgufFile GgufOf(const SpmVocab& vocab) {
  GgufFile gguf;
  gguf.kvs.push_back(GgufKv::String("tokenizer.ggml.model", "llama"));
  gguf.kvs.push_back(GgufKv::StringArray("tokenizer.ggml.tokens", vocab.tokens));
  gguf.kvs.push_back(GgufKv::F32Array("tokenizer.ggml.scores", vocab.scores));
  gguf.kvs.push_back(GgufKv::I32Array("tokenizer.ggml.token_type", vocab.types));
  if (!vocab.add_space_prefix) gguf.kvs.push_back(GgufKv::Bool("tokenizer.ggml.add_space_prefix", false));
  gguf.kvs.push_back(GgufKv::U32("tokenizer.ggml.bos_token_id", 1));
  gguf.kvs.push_back(GgufKv::U32("tokenizer.ggml.eos_token_id", 2));
  gguf.kvs.push_back(GgufKv::U32("tokenizer.ggml.unknown_token_id", 0));
  gguf.kvs.push_back(GgufKv::Bool("tokenizer.ggml.add_bos_token", true));
  gguf.kvs.push_back(GgufKv::String("tokenizer.chat_template", "{{ messages }}"));
  return gguf;
}

std::map<std::string, std::string> ByName(const TokenizerFiles& files) { return {files.begin(), files.end()}; }

TEST(SpmVocabTest, PiecesFillAndAddedTokensAsTheConverterWritesThem) {
  Added added;
  absl::StatusOr<SpmVocab> vocab =
      ReadSpmVocab(SpmModel(false), kPieces + 4, added.added_tokens, std::nullopt, added.tokenizer_config);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  ASSERT_EQ(vocab->tokens.size(), kPieces + 4);
  EXPECT_EQ(vocab->tokens[0], "<unk>");
  EXPECT_EQ(vocab->types[0], 2);
  EXPECT_EQ(vocab->types[1], 3);
  EXPECT_EQ(vocab->types[3], 6);
  EXPECT_EQ(vocab->tokens[3 + 256 + 2], "\xe2\x96\x81the");
  EXPECT_EQ(vocab->scores[3 + 256 + 2], -3.0f);
  EXPECT_EQ(vocab->types[kPieces - 1], 4);
  EXPECT_EQ(vocab->tokens[kPieces], "[PAD" + std::to_string(kPieces) + "]");
  EXPECT_EQ(vocab->scores[kPieces], -10000.0f);
  EXPECT_EQ(vocab->types[kPieces], 5);
  // added_tokens.json makes them USER_DEFINED; added_tokens_decoder's special one is CONTROL.
  EXPECT_EQ(vocab->tokens[kPieces + 2], "<|user|>");
  EXPECT_EQ(vocab->types[kPieces + 2], 3);
  EXPECT_EQ(vocab->scores[kPieces + 2], -1000.0f);
  EXPECT_EQ(vocab->tokens[kPieces + 3], "<|tool|>");
  EXPECT_EQ(vocab->types[kPieces + 3], 4);
  EXPECT_FALSE(vocab->add_space_prefix);
}

TEST(SpmVocabTest, ANonModelIsRefused) {
  absl::StatusOr<SpmVocab> vocab = ReadSpmVocab("not a protobuf \xff\xff", 0, std::nullopt, std::nullopt, std::nullopt);
  ASSERT_FALSE(vocab.ok());
  EXPECT_EQ(ReasonOf(vocab.status()), "TOKENIZER_INVALID") << vocab.status();
}

TEST(GgufTokenizerTest, SentencePieceComesBackAsTheFilesItWasReadFrom) {
  for (const bool prefix : {true, false}) {
    Added added;
    absl::StatusOr<SpmVocab> vocab =
        ReadSpmVocab(SpmModel(prefix), kPieces + 4, added.added_tokens, std::nullopt, added.tokenizer_config);
    ASSERT_TRUE(vocab.ok());
    std::map<std::string, std::string> files = ByName(RebuildTokenizerFiles(GgufOf(*vocab), "llama"));
    ASSERT_TRUE(files.count("tokenizer.model") && files.count("added_tokens.json") &&
                files.count("tokenizer_config.json"));
    spm::ModelProto model;
    ASSERT_TRUE(model.ParseFromString(files["tokenizer.model"]));
    EXPECT_EQ(model.pieces_size(), static_cast<int>(kPieces));  // the fill and added tokens are not pieces
    EXPECT_EQ(model.trainer_spec().model_type(), spm::TrainerSpec::BPE);
    EXPECT_TRUE(model.trainer_spec().byte_fallback());
    EXPECT_EQ(model.trainer_spec().unk_id(), 0);
    EXPECT_EQ(model.trainer_spec().bos_id(), 1);
    EXPECT_EQ(model.trainer_spec().eos_id(), 2);
    EXPECT_EQ(model.trainer_spec().pad_id(), -1);
    EXPECT_EQ(model.normalizer_spec().name(), "identity");
    EXPECT_EQ(model.normalizer_spec().add_dummy_prefix(), prefix);
    EXPECT_FALSE(model.normalizer_spec().remove_extra_whitespaces());
    const json added_back = json::parse(files["added_tokens.json"]);
    EXPECT_EQ(added_back, json({{"<|user|>", kPieces + 2}, {"<|tool|>", kPieces + 3}}));
    const json config = json::parse(files["tokenizer_config.json"]);
    EXPECT_EQ(config["bos_token"], "<s>");
    EXPECT_EQ(config["unk_token"], "<unk>");
    EXPECT_EQ(config["add_bos_token"], true);
    EXPECT_EQ(config["chat_template"], "{{ messages }}");
    EXPECT_EQ(config["tokenizer_class"], "LlamaTokenizer");
    EXPECT_EQ(config["added_tokens_decoder"][std::to_string(kPieces + 2)]["special"], true);
    EXPECT_EQ(config["added_tokens_decoder"][std::to_string(kPieces + 3)]["special"], false);

    absl::StatusOr<SpmVocab> again =
        ReadSpmVocab(files["tokenizer.model"], kPieces + 4, added_back, std::nullopt, config);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->tokens, vocab->tokens);
    EXPECT_EQ(again->scores, vocab->scores);
    EXPECT_EQ(again->types, vocab->types);
    EXPECT_EQ(again->add_space_prefix, vocab->add_space_prefix);
  }
}

TEST(GgufTokenizerTest, AVocabularySentencePieceCouldNotLoadGetsNoModel) {
  absl::StatusOr<SpmVocab> vocab = ReadSpmVocab(SpmModel(), 0, std::nullopt, std::nullopt, std::nullopt);
  ASSERT_TRUE(vocab.ok());
  SpmVocab repeated = *vocab;
  repeated.tokens[5] = repeated.tokens[4];
  EXPECT_TRUE(RebuildTokenizerFiles(GgufOf(repeated), "llama").empty());
  SpmVocab empty_piece = *vocab;
  empty_piece.tokens[7].clear();
  EXPECT_TRUE(RebuildTokenizerFiles(GgufOf(empty_piece), "llama").empty());
  SpmVocab odd_type = *vocab;
  odd_type.types[9] = 42;
  EXPECT_TRUE(RebuildTokenizerFiles(GgufOf(odd_type), "llama").empty());
  SpmVocab no_unknown = *vocab;
  no_unknown.types[0] = 3;
  EXPECT_TRUE(RebuildTokenizerFiles(GgufOf(no_unknown), "llama").empty());
  SpmVocab short_scores = *vocab;
  short_scores.scores.pop_back();
  EXPECT_TRUE(RebuildTokenizerFiles(GgufOf(short_scores), "llama").empty());
  // Gemma's vocabulary names its own tokenizer class.
  std::map<std::string, std::string> gemma = ByName(RebuildTokenizerFiles(GgufOf(*vocab), "gemma2"));
  EXPECT_EQ(json::parse(gemma["tokenizer_config.json"])["tokenizer_class"], "GemmaTokenizer");
}

}  // namespace
}  // namespace modelsmith
