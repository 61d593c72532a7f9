// The bisect job through the real modelsmithd and the CLI: a generated Llama-shaped checkpoint split
// into three chunks (files, index, manifest, progress, the figures line), the /metrics series it
// sets, the too-many-chunks refusal, and cancel in the middle.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>

#include "nlohmann/json.hpp"
#include "tests/support/f32_safetensors.h"
#include "tests/support/metrics_scrape.h"
#include "tests/support/read_file.h"
#include "tests/support/server_test.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class BisectServerTest : public ServerTest {
 protected:
  // Embedding, `layers` blocks of two `width` x `width` F32 weights, norm and head.
  void WriteModel(const std::string& dir, int layers, uint64_t width) {
    fs::create_directories(dir);
    std::vector<F32Tensor> tensors = {Random("model.embed_tokens.weight", {width, width}, 1)};
    for (int layer = 0; layer < layers; ++layer) {
      const std::string p = "model.layers." + std::to_string(layer) + ".";
      tensors.push_back(Random(p + "self_attn.q_proj.weight", {width, width}, 10 + layer));
      tensors.push_back(Random(p + "mlp.up_proj.weight", {width, width}, 100 + layer));
    }
    tensors.push_back(Random("model.norm.weight", {width}, 2));
    tensors.push_back(Random("lm_head.weight", {width, width}, 3));
    WriteSafetensors(dir + "/model.safetensors", tensors);
  }
};

TEST_F(BisectServerTest, ChunksIndexManifestProgressAndMetrics) {
  WriteModel(data_ + "/model", 6, 64);
  server_ = std::make_unique<ServerProcess>(data_, std::vector<std::string>{}, /*with_metrics=*/true);
  ASSERT_TRUE(server_->started());
  stub_ = Connect(server_->address());

  CommandResult run =
      Cli({"submit", "bisect", "--input", data_ + "/model", "--output", data_ + "/chunks", "--chunks", "3", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("chunks: 3 ("), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("cut between 9 block units"), std::string::npos) << run.out;

  // Embedding, six blocks of twice its size, norm, head: two blocks per chunk, ends on each side.
  const json index = json::parse(ReadFile(data_ + "/chunks/model.chunks.json"));
  ASSERT_EQ(index["chunks"].size(), 3u);
  EXPECT_EQ(index["chunks"][0]["units"], json({"model.embed_tokens", "model.layers.0", "model.layers.1"}));
  EXPECT_EQ(index["chunks"][1]["units"], json({"model.layers.2", "model.layers.3"}));
  EXPECT_EQ(index["chunks"][2]["units"], json({"model.layers.4", "model.layers.5", "model.norm", "lm_head"}));
  // A chunk holds the input's values.
  EXPECT_EQ(ReadTensor(data_ + "/chunks/model-chunk2-of-3.safetensors", "model.layers.3.mlp.up_proj.weight"),
            ReadTensor(data_ + "/model/model.safetensors", "model.layers.3.mlp.up_proj.weight"));
  const json manifest = json::parse(ReadFile(data_ + "/chunks/modelsmith.manifest.json"));
  EXPECT_EQ(manifest["kind"], "bisect");
  EXPECT_EQ(manifest["artifacts"].size(), 4u);

  v1::ListJobsRequest list_request;
  list_request.set_kind(v1::JOB_KIND_BISECT);
  grpc::ClientContext list_context;
  v1::ListJobsResponse listed;
  ASSERT_TRUE(stub_->ListJobs(&list_context, list_request, &listed).ok());
  ASSERT_EQ(listed.jobs_size(), 1);
  const v1::Job done = GetJob(*stub_, listed.jobs(0).id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.progress().bytes_done(), done.progress().bytes_total());
  const v1::BisectFigures& f = done.result().figures().bisect();
  ASSERT_EQ(f.chunk_sizes_bytes_size(), 3);
  EXPECT_EQ(f.chunk_sizes_bytes(1), 4u * 64 * 64 * 4);

  const std::string metrics = Scrape(server_->metrics_port());
  EXPECT_DOUBLE_EQ(Sample(metrics, "modelsmith_bisect_imbalance_ratio"), f.imbalance_ratio());
  EXPECT_EQ(Sample(metrics, "modelsmith_bisect_chunk_size_bytes_count"), 3);
  EXPECT_EQ(Sample(metrics, "modelsmith_bisect_chunk_size_bytes_sum"), done.result().figures().bytes_read());
  EXPECT_EQ(Sample(metrics, R"(modelsmith_jobs_total{kind="bisect",state="succeeded"})"), 1);

  // More chunks than blocks: refused at submit, naming the count, exit code 2 (invalid input).
  CommandResult refused =
      Cli({"submit", "bisect", "--input", data_ + "/model", "--output", data_ + "/many", "--chunks", "10"});
  EXPECT_EQ(refused.exit_code, 2) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("BISECT_TOO_MANY_CHUNKS"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("only 9 block unit(s)"), std::string::npos) << refused.err;
  ExpectNothingLeftIn(data_ + "/many");
}

TEST_F(BisectServerTest, CancelInTheMiddleLeavesNothing) {
  WriteModel(data_ + "/big", 8, 384);  // about 10 MiB of F32, moved at 500 KB/s
  Start({"--job-io-limit", "500KB"});
  v1::SubmitJobRequest request;
  request.mutable_spec()->mutable_bisect()->set_input(data_ + "/big");
  request.mutable_spec()->mutable_bisect()->set_output(data_ + "/slow");
  CancelMidwayLeavesNothing(request, data_ + "/slow");
}

}  // namespace
}  // namespace modelsmith::testing
