// The quantize job through the real modelsmithd: the CLI's submit --watch, the event stream,
// the refusal of a quantized input, and cancel in the middle.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"
#include "tests/support/server_test.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

class QuantizeServerTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    const std::string golden = SourceDir() + "/tests/data/golden/gguf";
    fs::copy_file(golden + "/input-f32.gguf", data_ + "/input-f32.gguf");
    fs::copy_file(golden + "/expected-Q4_0.gguf", data_ + "/already-q4_0.gguf");
  }
};

TEST_F(QuantizeServerTest, CliSubmitWatchWritesGgufAndManifest) {
  Start();
  CommandResult run =
      Cli({"submit", "quantize", "--input", data_ + "/input-f32.gguf", "--output", data_ + "/out/m-Q4_K.gguf",
           "--scheme", "Q4_K", "--tensor-type", "output\\.weight=Q6_K", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("state SUCCEEDED"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("9 tensors quantized, 3 kept"), std::string::npos) << run.out;
  EXPECT_TRUE(fs::exists(data_ + "/out/m-Q4_K.gguf"));
  std::ifstream manifest_file(data_ + "/out/m-Q4_K.gguf.manifest.json");
  nlohmann::json manifest = nlohmann::json::parse(manifest_file);
  EXPECT_EQ(manifest["kind"], "quantize");
  EXPECT_EQ(manifest["artifacts"][0]["size_bytes"], fs::file_size(data_ + "/out/m-Q4_K.gguf"));
  bool output_is_q6k = false;
  for (const auto& row : manifest["quality"]) output_is_q6k |= row["name"] == "output.weight" && row["type"] == "Q6_K";
  EXPECT_TRUE(output_is_q6k);

  v1::ModelInfo info;
  ASSERT_TRUE(Inspect(*stub_, data_ + "/out/m-Q4_K.gguf", &info).ok());
  EXPECT_EQ(info.format(), "gguf");
  EXPECT_EQ(info.quantization(), "Q4_K,Q6_K");
  for (const auto& t : info.tensors()) {
    if (t.name() == "blk.0.attn_q.weight") {
      EXPECT_EQ(t.dtype(), "Q4_K");
    }
  }
}

TEST_F(QuantizeServerTest, CliSubmitBnbNf4WritesTheLayoutAndInspectRecognisesIt) {
  // A checkpoint made by the independent Python writer, with a config.json beside it.
  fs::create_directories(data_ + "/hf");
  MakeCheckpoint(data_ + "/hf/model.safetensors", {"--hidden", "128", "--intermediate", "256"});
  std::ofstream(data_ + "/hf/config.json") << R"({"architectures": ["LlamaForCausalLM"], "torch_dtype": "float16"})";
  Start();
  CommandResult run = Cli({"submit", "quantize", "--input", data_ + "/hf", "--output", data_ + "/nf4", "--scheme",
                           "bnb_nf4", "--double-quant", "--block-size", "128", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("state SUCCEEDED"), std::string::npos) << run.out;
  EXPECT_TRUE(fs::exists(data_ + "/nf4/model.safetensors"));
  EXPECT_TRUE(fs::exists(data_ + "/nf4/modelsmith.manifest.json"));
  std::ifstream config_file(data_ + "/nf4/config.json");
  const nlohmann::json config = nlohmann::json::parse(config_file);
  EXPECT_EQ(config["torch_dtype"], "float16");
  EXPECT_EQ(config["quantization_config"]["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(config["quantization_config"]["bnb_4bit_use_double_quant"], true);

  v1::ModelInfo info;
  ASSERT_TRUE(Inspect(*stub_, data_ + "/nf4", &info).ok());
  ASSERT_GT(info.quantized_size(), 0);
  EXPECT_EQ(info.quantized(0).layout(), "bnb_nf4");
  bool state_tagged = false;
  for (const auto& t : info.tensors()) {
    state_tagged |=
        t.name().find("quant_state.bitsandbytes__nf4") != std::string::npos && t.quantization() == "bnb_nf4";
  }
  EXPECT_TRUE(state_tagged);

  // Quantizing the output again is refused at submit, naming the module.
  CommandResult again = Cli({"submit", "quantize", "--input", data_ + "/nf4", "--output", data_ + "/again.gguf",
                             "--scheme", "Q8_0", "--watch"});
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("ALREADY_QUANTIZED"), std::string::npos) << again.err;
  EXPECT_NE(again.err.find("bnb_nf4"), std::string::npos) << again.err;
}

TEST_F(QuantizeServerTest, QuantizedInputIsRefusedAtSubmit) {
  Start();
  CommandResult run = Cli({"submit", "quantize", "--input", data_ + "/already-q4_0.gguf", "--output", data_ + "/r.gguf",
                           "--scheme", "Q8_0", "--watch"});
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.err.find("ALREADY_QUANTIZED"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(data_ + "/r.gguf"));
}

TEST_F(QuantizeServerTest, RequantizeWarnsInTheEventStream) {
  Start();
  v1::SubmitJobRequest request;
  v1::QuantizeSpec* spec = request.mutable_spec()->mutable_quantize();
  spec->set_input(data_ + "/already-q4_0.gguf");
  spec->set_output(data_ + "/re.gguf");
  spec->set_scheme("Q8_0");
  spec->set_allow_requantize(true);
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, request, &job).ok());
  std::vector<v1::JobEvent> events = WatchAll(*stub_, job.id());
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().job().state(), v1::JOB_STATE_SUCCEEDED);
  int requantized = 0;
  for (const v1::JobEvent& e : events) requantized += e.has_warning() && e.warning().code() == "REQUANTIZED";
  EXPECT_EQ(requantized, 9);
}

TEST_F(QuantizeServerTest, CancelInTheMiddleLeavesNothing) {
  Start({"--job-io-limit", "500KB"});
  v1::SubmitJobRequest request;
  v1::QuantizeSpec* spec = request.mutable_spec()->mutable_quantize();
  spec->set_input(data_ + "/input-f32.gguf");
  spec->set_output(data_ + "/slow/q.gguf");
  spec->set_scheme("Q4_K");
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, request, &job).ok());
  EXPECT_EQ(CancelOnceUnderWay(*stub_, job.id()), v1::JOB_STATE_CANCELLED);
  ExpectNothingLeftIn(data_ + "/slow");
}

}  // namespace
}  // namespace modelsmith::testing
