#include "workers/jobs/shard/shard_job.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "tests/support/read_file.h"
#include "tests/support/checkpoint_files.h"
#include "tests/support/recording_context.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"
#include "workers/formats/model_view.h"
#include "workers/jobs/job_kinds.h"
#include "workers/storage/checksum.h"

namespace modelsmith {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> FileNames(const std::string& dir) {
  std::vector<std::string> names;
  if (!fs::exists(dir)) return names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

class ShardJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    input_ = dir_.path() + "/in/model.safetensors";
    fs::create_directories(dir_.path() + "/in");
    // hidden 64: attention 8 KiB each, mlp 24 KiB each (F16); vocab 128: 16 KiB embed/head.
    data_ = WriteCheckpoint(input_, LlamaLikeTensors(2, 64, 128));
  }

  absl::StatusOr<v1::JobResult> Run(const v1::ShardSpec& shard, uint32_t attempt = 1) {
    JobRun run;
    run.job_id = "job-test";
    run.attempt = attempt;
    *run.spec.mutable_shard() = shard;
    run.router = &router_;
    return RunJob(run, context_);
  }

  v1::ShardSpec Spec(const std::string& out, const std::string& size) {
    v1::ShardSpec spec;
    spec.set_input(input_);
    spec.set_output(dir_.path() + "/" + out);
    spec.set_max_shard_size(size);
    return spec;
  }

  // Every tensor of the output checkpoint at `dir` has the input's bytes.
  void ExpectSameTensors(const std::string& dir) {
    absl::StatusOr<ModelView> out = OpenModel(*router_.Resolve(dir));
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->tensors.size(), data_.size());
    for (const TensorInfo& t : out->tensors) {
      std::string bytes(t.size_bytes, '\0');
      ASSERT_TRUE(out->files[t.file_index]
                      .object->ReadAt(t.data_offset, t.size_bytes, reinterpret_cast<std::byte*>(bytes.data()))
                      .ok());
      EXPECT_EQ(bytes, data_.at(t.name)) << t.name;
    }
  }

  TempDir dir_;
  StorageRouter router_{{}};
  RecordingContext context_;
  std::string input_;
  std::map<std::string, std::string> data_;
};

TEST_F(ShardJobTest, WritesHuggingFaceShardsIndexAndManifest) {
  absl::StatusOr<v1::JobResult> result = Run(Spec("out", "40KB"));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string out = dir_.path() + "/out";
  std::vector<std::string> names = FileNames(out);
  const size_t shards = result->figures().shard().shard_count();
  ASSERT_GT(shards, 2u);
  EXPECT_EQ(names.size(), shards + 2);
  EXPECT_EQ(names.back(), "modelsmith.manifest.json");
  EXPECT_EQ(names[0], absl::StrFormat("model-00001-of-%05d.safetensors", shards));
  ExpectSameTensors(out);

  nlohmann::json index = nlohmann::json::parse(ReadFile(out + "/model.safetensors.index.json"));
  uint64_t total = 0;
  for (const auto& [name, bytes] : data_) total += bytes.size();
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(index["weight_map"].size(), data_.size());

  nlohmann::json manifest = nlohmann::json::parse(ReadFile(out + "/modelsmith.manifest.json"));
  EXPECT_EQ(manifest["kind"], "shard");
  ASSERT_EQ(manifest["artifacts"].size(), shards + 1);
  for (const auto& artifact : manifest["artifacts"]) {
    const std::string path = out + "/" + artifact["name"].get<std::string>();
    EXPECT_EQ(artifact["size_bytes"], fs::file_size(path));
    EXPECT_EQ(artifact["sha256"], Sha256Hex(ReadFile(path)));
  }
  // Every shard respects the limit (no tensor here is over it).
  for (uint64_t size : result->figures().shard().shard_sizes_bytes()) EXPECT_LE(size, 40'000u + 4096);
  EXPECT_GE(result->figures().shard().imbalance_ratio(), 1.0);
  EXPECT_EQ(result->artifacts(result->artifacts_size() - 1).role(), "manifest");
}

TEST_F(ShardJobTest, SameInputAndSpecGiveIdenticalBytes) {
  ASSERT_TRUE(Run(Spec("a", "30KB")).ok());
  ASSERT_TRUE(Run(Spec("b", "30KB")).ok());
  for (const std::string& name : FileNames(dir_.path() + "/a")) {
    if (name == "modelsmith.manifest.json") continue;
    EXPECT_EQ(ReadFile(dir_.path() + "/a/" + name), ReadFile(dir_.path() + "/b/" + name)) << name;
  }
}

TEST_F(ShardJobTest, ReshardsAndUnshardsASharedCheckpoint) {
  ASSERT_TRUE(Run(Spec("sharded", "30KB")).ok());
  input_ = dir_.path() + "/sharded";
  ASSERT_TRUE(Run(Spec("resharded", "70KB")).ok());
  ExpectSameTensors(dir_.path() + "/resharded");
  input_ = dir_.path() + "/resharded/model.safetensors.index.json";
  absl::StatusOr<v1::JobResult> single = Run(Spec("single", "0"));
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(FileNames(dir_.path() + "/single"),
            (std::vector<std::string>{"model.safetensors", "modelsmith.manifest.json"}));
  ExpectSameTensors(dir_.path() + "/single");
}

TEST_F(ShardJobTest, VariantAndStemNameFilesLikeDiffusers) {
  v1::ShardSpec spec = Spec("unet", "60KB");
  spec.set_variant("fp16");
  spec.set_stem("diffusion_pytorch_model");
  ASSERT_TRUE(Run(spec).ok());
  std::vector<std::string> names = FileNames(dir_.path() + "/unet");
  EXPECT_NE(std::find(names.begin(), names.end(), "diffusion_pytorch_model.safetensors.index.fp16.json"), names.end());
  EXPECT_EQ(names[0].rfind("diffusion_pytorch_model.fp16-00001-of-", 0), 0u) << names[0];
}

TEST_F(ShardJobTest, TensorOverLimitWarnsAndGetsItsOwnShard) {
  ASSERT_TRUE(Run(Spec("small", "10KB")).ok());
  bool warned_for_embed = false;
  for (const auto& [code, tensor] : context_.warnings()) {
    EXPECT_EQ(code, "SHARD_TENSOR_OVER_LIMIT");
    warned_for_embed = warned_for_embed || tensor == "model.embed_tokens.weight";
  }
  EXPECT_TRUE(warned_for_embed);
}

TEST_F(ShardJobTest, OccupiedOutputNeedsOverwrite) {
  ASSERT_TRUE(Run(Spec("out", "30KB")).ok());
  absl::StatusOr<v1::JobResult> again = Run(Spec("out", "30KB"));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(again.status()), "OUTPUT_NOT_EMPTY");

  // Overwrite with a larger limit: fewer shards, and the old ones that are not reused go away.
  v1::ShardSpec spec = Spec("out", "0");
  spec.set_overwrite(true);
  ASSERT_TRUE(Run(spec).ok());
  EXPECT_EQ(FileNames(dir_.path() + "/out"),
            (std::vector<std::string>{"model.safetensors", "modelsmith.manifest.json"}));
}

TEST_F(ShardJobTest, RerunOfSameJobReplacesItsOwnLeftovers) {
  ASSERT_TRUE(Run(Spec("out", "30KB")).ok());
  fs::remove(dir_.path() + "/out/modelsmith.manifest.json");  // as if the first attempt died
  std::ofstream(dir_.path() + "/out/.model-00001-of-00009.safetensors.modelsmith-dead.tmp") << "junk";
  ASSERT_TRUE(Run(Spec("out", "30KB"), /*attempt=*/2).ok());
  for (const std::string& name : FileNames(dir_.path() + "/out")) EXPECT_NE(name[0], '.') << name;
  ExpectSameTensors(dir_.path() + "/out");
}

TEST_F(ShardJobTest, CancelledJobLeavesNothing) {
  context_.StopAfterProgressReports(2);
  absl::StatusOr<v1::JobResult> result = Run(Spec("out", "30KB"));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(FileNames(dir_.path() + "/out").empty());
}

TEST_F(ShardJobTest, OutputInInputDirectoryIsRefused) {
  absl::StatusOr<v1::JobResult> result = Run(Spec("in", "30KB"));
  EXPECT_EQ(ReasonOf(result.status()), "OUTPUT_OVERLAPS_INPUT");
}

TEST_F(ShardJobTest, BadSpecsNameTheField) {
  v1::ShardSpec spec = Spec("out", "5 gigs");
  absl::Status status = ValidateSpec([&] {
    v1::JobSpec s;
    *s.mutable_shard() = spec;
    return s;
  }());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ContextOf(status)["field"], "shard.max_shard_size");
  spec = Spec("out", "1GB");
  spec.set_variant("../x");
  status = ValidateSpec([&] {
    v1::JobSpec s;
    *s.mutable_shard() = spec;
    return s;
  }());
  EXPECT_EQ(ContextOf(status)["field"], "shard.variant");
}

TEST_F(ShardJobTest, SpecWithoutAKindIsInvalid) {
  EXPECT_EQ(ValidateSpec(v1::JobSpec()).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ShardJobTest, ReportsProgressToCompletion) {
  ASSERT_TRUE(Run(Spec("out", "30KB")).ok());
  std::vector<v1::Progress> progress = context_.progress();
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().bytes_done(), progress.back().bytes_total());
  EXPECT_EQ(progress.back().tensors_done(), data_.size());
}

}  // namespace
}  // namespace modelsmith
