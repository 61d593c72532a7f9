// The LoRA merge job through the real modelsmithd and the CLI: a kohya and a PEFT adapter merged
// into a generated safetensors base (values checked against the update computed here), warnings
// and progress in the event stream, the manifest, the LORA_KEYS_UNMATCHED refusal at submit,
// policy dequantize on a GGUF and a torch base through the CLI, and cancel in the middle.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <sstream>

#include "nlohmann/json.hpp"
#include "tests/support/f32_safetensors.h"
#include "tests/support/read_file.h"
#include "tests/support/server_test.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class LoraMergeServerTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    fs::create_directories(data_ + "/base");
    std::vector<F32Tensor> base;
    for (int layer = 0; layer < 2; ++layer) {
      const std::string p = "model.layers." + std::to_string(layer) + ".self_attn.";
      base.push_back(Random(p + "q_proj.weight", {16, 16}, 10 + layer));
      base.push_back(Random(p + "v_proj.weight", {16, 16}, 20 + layer));
    }
    base.push_back(Random("model.norm.weight", {16}, 30));
    WriteSafetensors(data_ + "/base/model.safetensors", base);
    base_ = base;
  }

  std::vector<F32Tensor> base_;
};

TEST_F(LoraMergeServerTest, KohyaAndPeftAdaptersMergeWithWarningsProgressAndManifest) {
  // kohya, at strength 0.5: q_proj of layer 0, and a module the base does not have.
  const std::vector<F32Tensor> kohya = {Random("lora_te_model_layers_0_self_attn_q_proj.lora_down.weight", {2, 16}, 1),
                                        Random("lora_te_model_layers_0_self_attn_q_proj.lora_up.weight", {16, 2}, 2),
                                        {"lora_te_model_layers_0_self_attn_q_proj.alpha", {}, {4.0f}},
                                        Random("lora_te_model_layers_0_mlp_fc9.lora_down.weight", {2, 16}, 3),
                                        Random("lora_te_model_layers_0_mlp_fc9.lora_up.weight", {16, 2}, 4)};
  WriteSafetensors(data_ + "/kohya.safetensors", kohya);
  // PEFT, then: v_proj of layer 1 and q_proj of layer 0 again (applied after the kohya update).
  fs::create_directories(data_ + "/peft");
  const std::vector<F32Tensor> peft = {
      Random("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight", {4, 16}, 5),
      Random("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", {16, 4}, 6),
      Random("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {4, 16}, 7),
      Random("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {16, 4}, 8)};
  WriteSafetensors(data_ + "/peft/adapter_model.safetensors", peft);
  std::ofstream(data_ + "/peft/adapter_config.json")
      << R"({"peft_type": "LORA", "r": 4, "lora_alpha": 16, "use_rslora": true})";
  Start();

  // Without --allow-partial the unmatched kohya module fails the submission, naming it.
  v1::SubmitJobRequest request;
  v1::LoraMergeSpec* spec = request.mutable_spec()->mutable_lora_merge();
  spec->set_base(data_ + "/base");
  spec->add_adapters()->set_uri(data_ + "/kohya.safetensors");
  spec->set_output(data_ + "/strict");
  v1::Job refused;
  grpc::Status status = Submit(*stub_, request, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_EQ(ErrorInfoOf(status).reason(), "LORA_KEYS_UNMATCHED");
  EXPECT_NE(status.error_message().find("lora_te_model_layers_0_mlp_fc9"), std::string::npos) << status.error_message();
  ExpectNothingLeftIn(data_ + "/strict");

  CommandResult run =
      Cli({"submit", "lora-merge", "--base", data_ + "/base", "--adapter", data_ + "/kohya.safetensors:0.5",
           "--adapter", data_ + "/peft", "--output", data_ + "/merged", "--allow-partial", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("LORA_KEY_SKIPPED"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("lora merge: 2 adapter(s), 3 module(s) merged, 1 skipped; 2 tensors changed (0 requantized, 0 "
                         "dequantized), 3 copied"),
            std::string::npos)
      << run.out;

  // q_proj of layer 0: W + 0.5 * (4/2) * B1 A1 + (16/sqrt(4)) * B2 A2.
  std::vector<double> expected(base_[0].values.begin(), base_[0].values.end());
  auto add = [&](const F32Tensor& up, const F32Tensor& down, double scale) {
    const uint64_t rank = down.shape[0];
    for (uint64_t o = 0; o < 16; ++o) {
      for (uint64_t c = 0; c < 16; ++c) {
        double sum = 0;
        for (uint64_t k = 0; k < rank; ++k)
          sum += static_cast<double>(up.values[o * rank + k]) * down.values[k * 16 + c];
        expected[o * 16 + c] += scale * sum;
      }
    }
  };
  add(kohya[1], kohya[0], 0.5 * 4.0 / 2.0);
  add(peft[3], peft[2], 16.0 / 2.0);
  const std::vector<float> got =
      ReadTensor(data_ + "/merged/model.safetensors", "model.layers.0.self_attn.q_proj.weight");
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-5) << i;
  // Untouched: layer 1's q_proj, byte for byte.
  EXPECT_EQ(ReadTensor(data_ + "/merged/model.safetensors", "model.layers.1.self_attn.q_proj.weight"), base_[2].values);

  const json manifest = json::parse(ReadFile(data_ + "/merged/modelsmith.manifest.json"));
  EXPECT_EQ(manifest["kind"], "lora_merge");
  EXPECT_EQ(manifest["lora_merge"]["adapters"][0]["style"], "kohya");
  EXPECT_EQ(manifest["lora_merge"]["adapters"][1]["style"], "peft");
  EXPECT_EQ(manifest["lora_merge"]["adapters"][1]["use_rslora"], true);
  EXPECT_EQ(manifest["lora_merge"]["skipped"][0]["key"], "lora_te_model_layers_0_mlp_fc9");
  EXPECT_EQ(manifest["lora_merge"]["merged"].size(), 2u);

  // The event stream of the finished job replays its progress and the warning.
  v1::ListJobsRequest list_request;
  list_request.set_kind(v1::JOB_KIND_LORA_MERGE);
  grpc::ClientContext list_context;
  v1::ListJobsResponse listed;
  ASSERT_TRUE(stub_->ListJobs(&list_context, list_request, &listed).ok());
  std::string job_id;
  for (const v1::Job& j : listed.jobs()) {
    if (j.kind() == v1::JOB_KIND_LORA_MERGE) job_id = j.id();
  }
  ASSERT_FALSE(job_id.empty());
  const v1::Job done = GetJob(*stub_, job_id);
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_EQ(done.warnings_size(), 1);
  EXPECT_EQ(done.warnings(0).code(), "LORA_KEY_SKIPPED");
  EXPECT_EQ(done.warnings(0).tensor(), "lora_te_model_layers_0_mlp_fc9");
  EXPECT_EQ(done.progress().bytes_done(), done.progress().bytes_total());
  EXPECT_EQ(done.result().figures().lora_merge().tensors_merged(), 2u);
  EXPECT_EQ(done.result().artifacts(done.result().artifacts_size() - 1).role(), "manifest");
}

// A Q8_0 GGUF with --policy dequantize, and torch.save's own checkpoint merged in place: the CLI
// shows the policy's warning and the figures; Python's zipfile checks the torch output's CRC-32s.
TEST_F(LoraMergeServerTest, DequantizePolicyAndTorchBaseThroughTheCli) {
  fs::copy_file(SourceDir() + "/tests/data/golden/gguf/expected-Q8_0.gguf", data_ + "/q8.gguf");
  fs::create_directories(data_ + "/peft-v");
  WriteSafetensors(data_ + "/peft-v/adapter_model.safetensors",
                   {Random("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", {4, 256}, 1),
                    Random("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", {256, 4}, 2)});
  std::ofstream(data_ + "/peft-v/adapter_config.json") << R"({"peft_type": "LORA", "r": 4, "lora_alpha": 4})";
  fs::create_directories(data_ + "/torch");
  fs::copy_file(SourceDir() + "/tests/data/torch/state_dict.bin", data_ + "/torch/pytorch_model.bin");
  fs::create_directories(data_ + "/peft-q");
  WriteSafetensors(data_ + "/peft-q/adapter_model.safetensors",
                   {Random("base_model.model.layers.0.attn.q_proj.lora_A.weight", {2, 4}, 3),
                    Random("base_model.model.layers.0.attn.q_proj.lora_B.weight", {4, 2}, 4)});
  std::ofstream(data_ + "/peft-q/adapter_config.json") << R"({"peft_type": "LORA", "r": 2, "lora_alpha": 2})";
  Start();

  CommandResult gguf =
      Cli({"submit", "lora-merge", "--base", data_ + "/q8.gguf", "--adapter", data_ + "/peft-v", "--output",
           data_ + "/merged-f16.gguf", "--policy", "dequantize", "--dequantize-dtype", "f16", "--watch"});
  ASSERT_EQ(gguf.exit_code, 0) << gguf.out << gguf.err;
  EXPECT_NE(gguf.out.find("LORA_DEQUANTIZED"), std::string::npos) << gguf.out;
  EXPECT_NE(gguf.out.find("1 tensors changed (0 requantized, 1 dequantized)"), std::string::npos) << gguf.out;
  EXPECT_NE(gguf.out.find("blk.0.attn_v.weight"), std::string::npos) << gguf.out;

  CommandResult torch = Cli({"submit", "lora-merge", "--base", data_ + "/torch", "--adapter", data_ + "/peft-q",
                             "--output", data_ + "/merged-torch", "--watch"});
  ASSERT_EQ(torch.exit_code, 0) << torch.out << torch.err;
  EXPECT_EQ(fs::file_size(data_ + "/merged-torch/pytorch_model.bin"),
            fs::file_size(data_ + "/torch/pytorch_model.bin"));
  const CommandResult check =
      RunCommand({"python3", "-c", "import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() or 0)",
                  data_ + "/merged-torch/pytorch_model.bin"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST_F(LoraMergeServerTest, CancelInTheMiddleLeavesNothing) {
  // 8 MiB of F32 weights, each updated by the adapter, merged at 500 KB/s.
  std::vector<F32Tensor> base, adapter;
  for (int i = 0; i < 8; ++i) {
    const std::string name = "layers." + std::to_string(i) + ".proj";
    base.push_back(Random(name + ".weight", {512, 512}, i));
    adapter.push_back(Random("lora_unet_layers_" + std::to_string(i) + "_proj.lora_down.weight", {2, 512}, 100 + i));
    adapter.push_back(Random("lora_unet_layers_" + std::to_string(i) + "_proj.lora_up.weight", {512, 2}, 200 + i));
  }
  WriteSafetensors(data_ + "/big.safetensors", base);
  WriteSafetensors(data_ + "/big_lora.safetensors", adapter);
  Start({"--job-io-limit", "500KB"});
  v1::SubmitJobRequest request;
  v1::LoraMergeSpec* spec = request.mutable_spec()->mutable_lora_merge();
  spec->set_base(data_ + "/big.safetensors");
  spec->add_adapters()->set_uri(data_ + "/big_lora.safetensors");
  spec->set_output(data_ + "/slow");
  // Past the second of the 1 MiB tensors, about 4 s in.
  CancelMidwayLeavesNothing(request, data_ + "/slow");
}

}  // namespace
}  // namespace modelsmith::testing
