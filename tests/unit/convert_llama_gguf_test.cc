// Hugging Face -> GGUF -> Hugging Face in-process on a generated tiny Llama (random weights, a
// small BPE tokenizer.json): names, shapes, metadata, the tokenizer and values survive the round
// trip, and the GGUF holds llama.cpp's names, Q/K row order and keys.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "nlohmann/json.hpp"
#include "tests/support/recording_context.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"
#include "workers/formats/gguf.h"
#include "workers/formats/model_view.h"
#include "workers/formats/safetensors.h"
#include "workers/jobs/job_kinds.h"

namespace modelsmith {
namespace {

using nlohmann::json;

// Llama 3's pre-tokenizer split, as its tokenizer.json holds it.
constexpr const char* kLlama3Split =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

constexpr uint64_t kHidden = 64, kHeads = 4, kKvHeads = 2, kFfn = 128, kVocab = 40, kLayers = 2;

class LlamaRoundTripTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hf_ = dir_.path() + "/hf";
    std::filesystem::create_directories(hf_);
    std::vector<SafetensorsEntry> entries;
    auto add = [&](const std::string& name, std::vector<uint64_t> shape) {
      entries.push_back({name, DType::kF32, shape, *StorageBytes(DType::kF32, shape)});
    };
    add("model.embed_tokens.weight", {kVocab, kHidden});
    for (uint64_t l = 0; l < kLayers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      add(p + "input_layernorm.weight", {kHidden});
      add(p + "self_attn.q_proj.weight", {kHidden, kHidden});
      add(p + "self_attn.k_proj.weight", {kHidden / kHeads * kKvHeads, kHidden});
      add(p + "self_attn.v_proj.weight", {kHidden / kHeads * kKvHeads, kHidden});
      add(p + "self_attn.o_proj.weight", {kHidden, kHidden});
      add(p + "post_attention_layernorm.weight", {kHidden});
      add(p + "mlp.gate_proj.weight", {kFfn, kHidden});
      add(p + "mlp.up_proj.weight", {kFfn, kHidden});
      add(p + "mlp.down_proj.weight", {kHidden, kFfn});
    }
    add("model.norm.weight", {kHidden});
    add("lm_head.weight", {kVocab, kHidden});
    std::ofstream out(hf_ + "/model.safetensors", std::ios::binary);
    out << SerializeSafetensorsHeader(entries, {{"format", "pt"}});
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (const SafetensorsEntry& e : entries) {
      std::vector<float> values(e.size_bytes / 4);
      for (float& v : values) v = normal(rng);
      data_[e.name] = std::string(reinterpret_cast<const char*>(values.data()), e.size_bytes);
      out << data_[e.name];
    }
    out.close();
    config_ = {{"architectures", {"LlamaForCausalLM"}},
               {"model_type", "llama"},
               {"hidden_size", kHidden},
               {"intermediate_size", kFfn},
               {"num_hidden_layers", kLayers},
               {"num_attention_heads", kHeads},
               {"num_key_value_heads", kKvHeads},
               {"max_position_embeddings", 256},
               {"rms_norm_eps", 1e-05},
               {"rope_theta", 500000.0},
               {"vocab_size", kVocab},
               {"bos_token_id", 1},
               {"eos_token_id", 2},
               {"tie_word_embeddings", false}};
    std::ofstream(hf_ + "/config.json") << config_.dump(2);
    // A byte-level BPE vocabulary: 36 tokens, 3 merges, and 3 added special tokens (one id unused).
    json vocab = json::object();
    for (int i = 0; i < 36; ++i) vocab[std::string(1, static_cast<char>('a' + i % 26)) + (i >= 26 ? "x" : "")] = i + 3;
    json tokenizer = {
        {"version", "1.0"},
        {"added_tokens",
         {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
          {{"id", 1}, {"content", "<s>"}, {"special", true}},
          {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Split}}}},
            {{"type", "ByteLevel"}, {"use_regex", false}}}}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b", "c d", {"e", "f"}}}}},
    };
    std::ofstream(hf_ + "/tokenizer.json") << tokenizer.dump();
    std::ofstream(hf_ + "/tokenizer_config.json")
        << R"({"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true,
        "chat_template": "{{ messages }}"})";
  }
  absl::StatusOr<v1::JobResult> Convert(const std::string& input, const std::string& output, v1::TargetFormat to,
                                        const std::string& dtype, const std::string& tokenizer_pre = "") {
    JobRun run;
    run.job_id = "job-test";
    v1::ConvertSpec* spec = run.spec.mutable_convert();
    spec->set_input(input);
    spec->set_output(output);
    spec->set_target_format(to);
    spec->set_dtype(dtype);
    spec->set_tokenizer_pre(tokenizer_pre);
    run.router = &router_;
    return RunJob(run, context_);
  }

  TempDir dir_;
  std::string hf_;
  json config_;
  std::map<std::string, std::string> data_;
  StorageRouter router_{{}};
  RecordingContext context_;
};

std::string Bytes(const ModelView& model, const std::string& name) {
  for (const TensorInfo& t : model.tensors) {
    if (t.name != name) continue;
    std::string bytes(t.size_bytes, '\0');
    EXPECT_TRUE(model.files[t.file_index]
                    .object->ReadAt(t.data_offset, t.size_bytes, reinterpret_cast<std::byte*>(bytes.data()))
                    .ok());
    return bytes;
  }
  ADD_FAILURE() << "no tensor " << name;
  return "";
}

TEST_F(LlamaRoundTripTest, HuggingFaceToGgufAndBackKeepsNamesShapesMetadataAndValues) {
  const std::string gguf_path = dir_.path() + "/tiny.gguf";
  absl::StatusOr<v1::JobResult> to_gguf = Convert(hf_, gguf_path, v1::TARGET_FORMAT_GGUF, "f32");
  ASSERT_TRUE(to_gguf.ok()) << to_gguf.status();
  absl::StatusOr<ModelView> gguf = OpenModel(*router_.Resolve(gguf_path));
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  const GgufFile& header = *gguf->gguf;
  EXPECT_EQ(header.Find("general.architecture")->AsString(), "llama");
  EXPECT_EQ(header.Find("llama.block_count")->AsUnsigned(), kLayers);
  EXPECT_EQ(header.Find("llama.embedding_length")->AsUnsigned(), kHidden);
  EXPECT_EQ(header.Find("llama.feed_forward_length")->AsUnsigned(), kFfn);
  EXPECT_EQ(header.Find("llama.attention.head_count")->AsUnsigned(), kHeads);
  EXPECT_EQ(header.Find("llama.attention.head_count_kv")->AsUnsigned(), kKvHeads);
  EXPECT_EQ(header.Find("llama.context_length")->AsUnsigned(), 256u);
  EXPECT_EQ(header.Find("llama.rope.dimension_count")->AsUnsigned(), kHidden / kHeads);
  EXPECT_EQ(header.Find("llama.vocab_size")->AsUnsigned(), kVocab);
  EXPECT_EQ(header.Find("general.file_type")->AsUnsigned(), 0u);  // ALL_F32
  // gguf-py's size label of 79,152 parameters (embeddings, two layers, norm, head), right after the name.
  ASSERT_NE(header.Find("general.size_label"), nullptr);
  EXPECT_EQ(header.Find("general.size_label")->AsString(), "79K");
  EXPECT_EQ(header.kvs[2].key, "general.name");
  EXPECT_EQ(header.kvs[3].key, "general.size_label");
  EXPECT_EQ(header.Find("tokenizer.ggml.model")->AsString(), "gpt2");
  EXPECT_EQ(header.Find("tokenizer.ggml.pre")->AsString(), "llama-bpe");
  EXPECT_EQ(header.Find("tokenizer.ggml.bos_token_id")->AsUnsigned(), 1u);
  EXPECT_EQ(header.Find("tokenizer.ggml.eos_token_id")->AsUnsigned(), 2u);
  EXPECT_EQ(header.Find("tokenizer.ggml.unknown_token_id"), nullptr);  // no unk_token in tokenizer_config
  ASSERT_NE(header.Find("tokenizer.ggml.tokens"), nullptr);
  ASSERT_NE(header.Find("tokenizer.ggml.merges"), nullptr);
  ASSERT_NE(header.Find("tokenizer.chat_template"), nullptr);
  EXPECT_EQ(header.Find("tokenizer.ggml.add_bos_token")->type, GgufValueType::kBool);
  // 40 tokens: 3 special, 36 normal, one hole (id 39) as [PAD39].
  const std::string& tokens = header.Find("tokenizer.ggml.tokens")->value_bytes;
  uint64_t count;
  std::memcpy(&count, tokens.data() + 4, 8);
  EXPECT_EQ(count, kVocab);
  EXPECT_NE(tokens.find("[PAD39]"), std::string::npos);
  const std::string& types = header.Find("tokenizer.ggml.token_type")->value_bytes;
  std::vector<int32_t> type_values((types.size() - 12) / 4);
  std::memcpy(type_values.data(), types.data() + 12, types.size() - 12);
  EXPECT_EQ(type_values[1], 3);   // <s>: CONTROL
  EXPECT_EQ(type_values[3], 1);   // 'a': NORMAL
  EXPECT_EQ(type_values[39], 5);  // hole: UNUSED

  // llama.cpp names; the K projection's rows interleaved per head (2 heads of 16 rows).
  EXPECT_EQ(Bytes(*gguf, "blk.1.ffn_down.weight"), data_["model.layers.1.mlp.down_proj.weight"]);
  const std::string k_gguf = Bytes(*gguf, "blk.0.attn_k.weight");
  const std::string& k_hf = data_["model.layers.0.self_attn.k_proj.weight"];
  const uint64_t head_dim = kHidden / kHeads, row_bytes = kHidden * 4;
  for (uint64_t h = 0; h < kKvHeads; ++h) {
    for (uint64_t k = 0; k < head_dim / 2; ++k) {
      for (uint64_t s = 0; s < 2; ++s) {
        EXPECT_EQ(k_gguf.substr((h * head_dim + 2 * k + s) * row_bytes, row_bytes),
                  k_hf.substr((h * head_dim + s * head_dim / 2 + k) * row_bytes, row_bytes));
      }
    }
  }

  // And back: every tensor and the config survive.
  absl::StatusOr<v1::JobResult> back = Convert(gguf_path, dir_.path() + "/back", v1::TARGET_FORMAT_SAFETENSORS, "");
  ASSERT_TRUE(back.ok()) << back.status();
  absl::StatusOr<ModelView> round = OpenModel(*router_.Resolve(dir_.path() + "/back"));
  ASSERT_TRUE(round.ok()) << round.status();
  ASSERT_EQ(round->tensors.size(), data_.size());
  for (const auto& [name, bytes] : data_) EXPECT_TRUE(Bytes(*round, name) == bytes) << name;
  std::ifstream config_file(dir_.path() + "/back/config.json");
  const json config = json::parse(config_file);
  for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "vocab_size",
                          "bos_token_id", "eos_token_id", "tie_word_embeddings"}) {
    EXPECT_EQ(config[key], config_[key]) << key;
  }
  EXPECT_EQ(config["architectures"], config_["architectures"]);
}

// RoPE scaling both ways: linear and yarn as rope.scaling.* keys, Llama 3's as the rope_freqs
// table whose parameters come back; a table no parameters compute is refused naming the tensor.
TEST_F(LlamaRoundTripTest, RopeScalingVariantsComeBack) {
  const json variants[] = {{{"factor", 4.0}, {"rope_type", "linear"}},
                           {{"factor", 4.0}, {"original_max_position_embeddings", 64}, {"rope_type", "yarn"}},
                           {{"factor", 8.0},
                            {"high_freq_factor", 4.0},
                            {"low_freq_factor", 1.0},
                            {"original_max_position_embeddings", 64},
                            {"rope_type", "llama3"}}};
  for (const json& scaling : variants) {
    const std::string kind = scaling["rope_type"];
    json config = config_;
    config["rope_scaling"] = scaling;
    std::ofstream(hf_ + "/config.json") << config.dump(2);
    const std::string gguf_path = dir_.path() + "/" + kind + ".gguf", back = dir_.path() + "/" + kind + "-hf";
    ASSERT_TRUE(Convert(hf_, gguf_path, v1::TARGET_FORMAT_GGUF, "").ok()) << kind;
    absl::StatusOr<ModelView> gguf = OpenModel(*router_.Resolve(gguf_path));
    ASSERT_TRUE(gguf.ok());
    const GgufKv* type = gguf->gguf->Find("llama.rope.scaling.type");
    if (kind == "llama3") {
      EXPECT_EQ(type, nullptr);
      EXPECT_EQ(gguf->tensors.front().name, "rope_freqs.weight");
    } else {
      ASSERT_NE(type, nullptr);
      EXPECT_EQ(type->AsString(), kind);
    }
    ASSERT_TRUE(Convert(gguf_path, back, v1::TARGET_FORMAT_SAFETENSORS, "").ok()) << kind;
    const json config_back = json::parse(std::ifstream(back + "/config.json"));
    EXPECT_EQ(config_back["rope_scaling"], scaling) << kind;
    if (kind != "llama3") continue;
    // The same GGUF with the first (fastest) pair's divisor below 1, which no parameters give.
    std::string bytes((std::istreambuf_iterator<char>(std::ifstream(gguf_path, std::ios::binary).rdbuf())), {});
    const float half = 0.5f;
    std::memcpy(bytes.data() + gguf->tensors.front().data_offset, &half, 4);
    std::ofstream(dir_.path() + "/bent.gguf", std::ios::binary) << bytes;
    absl::StatusOr<v1::JobResult> bent =
        Convert(dir_.path() + "/bent.gguf", dir_.path() + "/bent-hf", v1::TARGET_FORMAT_SAFETENSORS, "");
    EXPECT_EQ(ReasonOf(bent.status()), "ROPE_FREQS_UNRECOVERABLE") << bent.status();
    EXPECT_EQ(bent.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(bent.status().message().find("rope_freqs.weight"), std::string::npos);
    EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/bent-hf"));
  }
}

TEST_F(LlamaRoundTripTest, Q8_0OutputAndRefusals) {
  absl::StatusOr<v1::JobResult> q8 = Convert(hf_, dir_.path() + "/tiny-q8.gguf", v1::TARGET_FORMAT_GGUF, "q8_0");
  ASSERT_TRUE(q8.ok()) << q8.status();
  absl::StatusOr<ModelView> gguf = OpenModel(*router_.Resolve(dir_.path() + "/tiny-q8.gguf"));
  ASSERT_TRUE(gguf.ok());
  for (const TensorInfo& t : gguf->tensors) {
    EXPECT_EQ(*t.ggml_type,
              t.shape.size() == 1 ? static_cast<uint32_t>(GgmlType::kF32) : static_cast<uint32_t>(GgmlType::kQ8_0))
        << t.name;
  }
  EXPECT_EQ(gguf->gguf->Find("general.file_type")->AsUnsigned(), 7u);  // MOSTLY_Q8_0

  // Mistral Nemo's split gives "tekken", a lone GPT-2 ByteLevel "gpt-2".
  json tokenizer = json::parse(std::ifstream(hf_ + "/tokenizer.json"));
  const json llama3 = tokenizer["pre_tokenizer"];
  const std::pair<json, std::string> recognised[] = {
      {{{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern",
            {{"Regex",
              R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}}},
          {{"type", "ByteLevel"}, {"use_regex", false}}}}},
       "tekken"},
      {{{"type", "ByteLevel"}, {"add_prefix_space", false}}, "gpt-2"}};
  for (const auto& [pre, name] : recognised) {
    tokenizer["pre_tokenizer"] = pre;
    std::ofstream(hf_ + "/tokenizer.json") << tokenizer.dump();
    const std::string out = dir_.path() + "/" + name + ".gguf";
    absl::StatusOr<v1::JobResult> done = Convert(hf_, out, v1::TARGET_FORMAT_GGUF, "");
    ASSERT_TRUE(done.ok()) << name << ": " << done.status();
    absl::StatusOr<ModelView> written = OpenModel(*router_.Resolve(out));
    ASSERT_TRUE(written.ok());
    EXPECT_EQ(written->gguf->Find("tokenizer.ggml.pre")->AsString(), name);
  }
  tokenizer["pre_tokenizer"] = llama3;

  // A pre-tokenizer the converter does not recognise is refused unless the spec names it.
  tokenizer["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = R"(\p{L}+|\p{N}+|\s+)";
  std::ofstream(hf_ + "/tokenizer.json") << tokenizer.dump();
  absl::StatusOr<v1::JobResult> unknown = Convert(hf_, dir_.path() + "/u.gguf", v1::TARGET_FORMAT_GGUF, "");
  EXPECT_EQ(ReasonOf(unknown.status()), "TOKENIZER_PRE_UNKNOWN") << unknown.status();
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<v1::JobResult> named = Convert(hf_, dir_.path() + "/n.gguf", v1::TARGET_FORMAT_GGUF, "", "smollm");
  ASSERT_TRUE(named.ok()) << named.status();
  absl::StatusOr<ModelView> named_gguf = OpenModel(*router_.Resolve(dir_.path() + "/n.gguf"));
  ASSERT_TRUE(named_gguf.ok());
  EXPECT_EQ(named_gguf->gguf->Find("tokenizer.ggml.pre")->AsString(), "smollm");

  std::filesystem::remove(hf_ + "/tokenizer.json");
  absl::StatusOr<v1::JobResult> no_tokenizer = Convert(hf_, dir_.path() + "/x.gguf", v1::TARGET_FORMAT_GGUF, "");
  EXPECT_EQ(ReasonOf(no_tokenizer.status()), "TOKENIZER_MISSING") << no_tokenizer.status();
  std::ofstream(hf_ + "/config.json") << R"({"architectures": ["GPT2LMHeadModel"]})";
  absl::StatusOr<v1::JobResult> gpt2 = Convert(hf_, dir_.path() + "/y.gguf", v1::TARGET_FORMAT_GGUF, "");
  EXPECT_EQ(ReasonOf(gpt2.status()), "ARCHITECTURE_UNSUPPORTED") << gpt2.status();
  EXPECT_EQ(gpt2.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(gpt2.status().message().find("Qwen3ForCausalLM"), std::string::npos) << "names the supported ones";
}

}  // namespace
}  // namespace modelsmith
