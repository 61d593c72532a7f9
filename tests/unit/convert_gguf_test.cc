// GGUF -> safetensors in-process, on llama.cpp's own files (tests/data/golden/gguf): Hugging
// Face names, llama.cpp's Q/K row order undone, block types dequantized, config.json rebuilt.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "nlohmann/json.hpp"
#include "tests/support/recording_context.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"
#include "workers/formats/gguf.h"
#include "workers/formats/model_view.h"
#include "workers/jobs/convert/gguf_to_hf.h"
#include "workers/jobs/job_kinds.h"
#include "workers/quant/quantize_rows.h"

namespace modelsmith {
namespace {

std::string GoldenDir() { return std::string(MODELSMITH_SOURCE_DIR) + "/tests/data/golden/gguf"; }

// A model's tensor as F32 values (decoding GGUF block types with the ggml decoders).
std::vector<float> Values(const ModelView& model, const std::string& name, std::vector<uint64_t>* shape = nullptr) {
  for (const TensorInfo& t : model.tensors) {
    if (t.name != name) continue;
    std::string bytes(t.size_bytes, '\0');
    EXPECT_TRUE(model.files[t.file_index]
                    .object->ReadAt(t.data_offset, t.size_bytes, reinterpret_cast<std::byte*>(bytes.data()))
                    .ok());
    const uint64_t row = t.shape.back();
    const uint64_t rows = *ElementCount(t.shape) / row;
    std::vector<float> values(rows * row);
    const GgmlType type = t.ggml_type ? static_cast<GgmlType>(*t.ggml_type) : GgmlType::kF32;
    DecodeRows(type, reinterpret_cast<const uint8_t*>(bytes.data()), rows, row, values.data());
    if (shape) *shape = t.shape;
    return values;
  }
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

class ConvertGgufTest : public ::testing::Test {
 protected:
  absl::StatusOr<v1::JobResult> Convert(const std::string& input, const std::string& output,
                                        const std::string& dtype = "") {
    JobRun run;
    run.job_id = "job-test";
    v1::ConvertSpec* spec = run.spec.mutable_convert();
    spec->set_input(input);
    spec->set_output(dir_.path() + "/" + output);
    spec->set_target_format(v1::TARGET_FORMAT_SAFETENSORS);
    spec->set_dtype(dtype);
    run.router = &router_;
    return RunJob(run, context_);
  }
  ModelView Open(const std::string& uri) {
    absl::StatusOr<ModelView> model = OpenModel(*router_.Resolve(uri));
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? *std::move(model) : ModelView{};
  }

  TempDir dir_;
  StorageRouter router_{{}};
  RecordingContext context_;
};

TEST(GgufToHfTest, UnpermuteRowsUndoesLlamaCppsInterleaving) {
  // One head of 8 rows: llama.cpp stores HF rows 0..3 (first rotary half) and 4..7 interleaved as
  // 0,4,1,5,2,6,3,7; HF row r comes from GGUF row source[r].
  absl::StatusOr<std::vector<uint64_t>> source = UnpermuteRows(8, 1);
  ASSERT_TRUE(source.ok());
  EXPECT_EQ(*source, (std::vector<uint64_t>{0, 2, 4, 6, 1, 3, 5, 7}));
  EXPECT_FALSE(UnpermuteRows(10, 4).ok());
}

TEST_F(ConvertGgufTest, LlamaGgufBecomesAHuggingFaceCheckpoint) {
  absl::StatusOr<v1::JobResult> result = Convert(GoldenDir() + "/input-f32.gguf", "hf");
  ASSERT_TRUE(result.ok()) << result.status();
  const ModelView gguf = Open(GoldenDir() + "/input-f32.gguf");
  const ModelView hf = Open(dir_.path() + "/hf");
  EXPECT_EQ(hf.format, "safetensors");
  EXPECT_EQ(hf.tensors.size(), 12u);

  // Renamed, same values, for a tensor that is not permuted.
  std::vector<uint64_t> shape;
  EXPECT_EQ(Values(hf, "model.layers.0.mlp.up_proj.weight", &shape), Values(gguf, "blk.0.ffn_up.weight"));
  EXPECT_EQ(shape, (std::vector<uint64_t>{512, 256}));
  EXPECT_EQ(Values(hf, "lm_head.weight"), Values(gguf, "output.weight"));
  EXPECT_EQ(Values(hf, "model.norm.weight"), Values(gguf, "output_norm.weight"));

  // Q and K: 4 heads of 64 rows; HF row (h, s*32 + k) is GGUF row (h, 2k + s).
  for (const auto& [hf_name, gguf_name] :
       {std::pair{"model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"},
        std::pair{"model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight"}}) {
    const std::vector<float> a = Values(hf, hf_name), b = Values(gguf, gguf_name);
    ASSERT_EQ(a.size(), 256u * 256u);
    for (uint64_t h = 0; h < 4; ++h) {
      for (uint64_t s = 0; s < 2; ++s) {
        for (uint64_t k = 0; k < 32; ++k) {
          const uint64_t hf_row = h * 64 + s * 32 + k, gguf_row = h * 64 + 2 * k + s;
          ASSERT_EQ(std::memcmp(&a[hf_row * 256], &b[gguf_row * 256], 256 * 4), 0) << hf_name << " row " << hf_row;
        }
      }
    }
  }
  std::ifstream config_file(dir_.path() + "/hf/config.json");
  const nlohmann::json config = nlohmann::json::parse(config_file);
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(config["hidden_size"], 256);
  EXPECT_EQ(config["intermediate_size"], 512);
  EXPECT_EQ(config["num_hidden_layers"], 1);
  EXPECT_EQ(config["num_attention_heads"], 4);
  EXPECT_EQ(config["num_key_value_heads"], 4);
  EXPECT_EQ(config["vocab_size"], 256);
  EXPECT_EQ(config["max_position_embeddings"], 128);
  EXPECT_EQ(config["rms_norm_eps"], 1e-05);
  EXPECT_EQ(config["bos_token_id"], 1);
  EXPECT_EQ(config["eos_token_id"], 2);
  EXPECT_EQ(config["tie_word_embeddings"], false);
  EXPECT_EQ(config["torch_dtype"], "float32");
}

TEST_F(ConvertGgufTest, QuantizedGgufIsDequantizedToTheAskedDtype) {
  absl::StatusOr<v1::JobResult> result = Convert(GoldenDir() + "/expected-Q8_0.gguf", "q8", "f32");
  ASSERT_TRUE(result.ok()) << result.status();
  const ModelView gguf = Open(GoldenDir() + "/expected-Q8_0.gguf");
  const ModelView hf = Open(dir_.path() + "/q8");
  for (const TensorInfo& t : hf.tensors) EXPECT_EQ(t.dtype, DType::kF32) << t.name;
  // ggml's own Q8_0 decoder gives the same values.
  EXPECT_EQ(Values(hf, "model.layers.0.mlp.down_proj.weight"), Values(gguf, "blk.0.ffn_down.weight"));
  std::ifstream config_file(dir_.path() + "/q8/config.json");
  EXPECT_EQ(nlohmann::json::parse(config_file)["torch_dtype"], "float32");
}

TEST_F(ConvertGgufTest, OtherArchitecturesAreRefusedNamingThem) {
  // input-f32.gguf with its architecture renamed is no longer the Llama family.
  std::ifstream in(GoldenDir() + "/input-f32.gguf", std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  std::string file = bytes.str();
  const size_t at = file.find("llama");
  ASSERT_NE(at, std::string::npos);
  file.replace(at, 5, "gemma");
  std::ofstream(dir_.path() + "/gemma.gguf", std::ios::binary) << file;
  absl::StatusOr<v1::JobResult> result = Convert(dir_.path() + "/gemma.gguf", "g");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(ReasonOf(result.status()), "GGUF_ARCHITECTURE_UNSUPPORTED") << result.status();
}

}  // namespace
}  // namespace modelsmith
