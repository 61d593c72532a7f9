// The one publish protocol: staged artifacts are invisible until Publish, the manifest comes last,
// and an output being replaced stays whole (manifest and every file it lists) until then.
#include "workers/jobs/core/publication.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "nlohmann/json.hpp"
#include "tests/support/f32_safetensors.h"
#include "tests/support/read_file.h"
#include "tests/support/recording_context.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"
#include "workers/jobs/job_kinds.h"
#include "workers/storage/checksum.h"

namespace modelsmith {
namespace {

namespace fs = std::filesystem;

std::set<std::string> Listing(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

class PublicationTest : public ::testing::Test {
 protected:
  void SetUp() override { out_ = root_.path() + "/out"; }

  Publication Open(bool overwrite) {
    absl::StatusOr<Publication> p = Publication::ForDirectory(router_, out_, overwrite, 1, "test.output");
    EXPECT_TRUE(p.ok()) << p.status();
    return *std::move(p);
  }

  // Publishes small files name -> text.
  void PublishFiles(const std::map<std::string, std::string>& files, bool overwrite) {
    Publication p = Open(overwrite);
    for (const auto& [name, text] : files) ASSERT_TRUE(p.WriteSmall(p.UriOf(name), text, "data").ok());
    v1::JobResult result;
    ASSERT_TRUE(p.Publish({{"kind", "test"}}, result, tracker_, context_).ok());
  }

  // Every artifact the manifest lists is there with the listed size and SHA-256; returns the names.
  std::set<std::string> ExpectWhole(const std::string& manifest_path) {
    std::set<std::string> names;
    nlohmann::json manifest = nlohmann::json::parse(ReadFile(manifest_path), nullptr, false);
    EXPECT_TRUE(manifest.is_object()) << manifest_path;
    if (!manifest.is_object()) return names;
    for (const auto& a : manifest["artifacts"]) {
      const std::string path = fs::path(manifest_path).parent_path() / a["name"].get<std::string>();
      const std::string bytes = ReadFile(path);
      EXPECT_EQ(bytes.size(), a["size_bytes"].get<uint64_t>()) << path;
      EXPECT_EQ(Sha256Hex(bytes), a["sha256"].get<std::string>()) << path;
      names.insert(a["name"].get<std::string>());
    }
    return names;
  }

  TempDir root_;
  std::string out_;
  StorageRouter router_{std::vector<std::string>{root_.path()}};
  RecordingContext context_;
  ProgressTracker tracker_{context_, 0, 0};
};

TEST_F(PublicationTest, StagedArtifactsAreInvisibleUntilPublish) {
  Publication p = Open(false);
  ASSERT_TRUE(p.WriteSmall(p.UriOf("a.txt"), "alpha", "data").ok());
  EXPECT_FALSE(fs::exists(out_ + "/a.txt"));
  EXPECT_FALSE(fs::exists(out_ + "/modelsmith.manifest.json"));
  v1::JobResult result;
  ASSERT_TRUE(p.Publish({{"kind", "test"}}, result, tracker_, context_).ok());
  EXPECT_EQ(ReadFile(out_ + "/a.txt"), "alpha");
  ASSERT_EQ(result.artifacts_size(), 2);
  EXPECT_EQ(result.artifacts(1).role(), "manifest");
  EXPECT_EQ(result.figures().bytes_written(), 5 + result.artifacts(1).size_bytes());
  EXPECT_EQ(ExpectWhole(out_ + "/modelsmith.manifest.json"), (std::set<std::string>{"a.txt"}));
}

TEST_F(PublicationTest, PublishReplacesTheManifestAndRemovesWhatOnlyTheOldOneListed) {
  PublishFiles({{"a.txt", "old a"}, {"b.txt", "old b"}}, false);
  PublishFiles({{"a.txt", "new a"}, {"c.txt", "new c"}}, true);
  EXPECT_EQ(ReadFile(out_ + "/a.txt"), "new a");
  EXPECT_EQ(Listing(out_), (std::set<std::string>{"a.txt", "c.txt", "modelsmith.manifest.json"}));
  EXPECT_EQ(ExpectWhole(out_ + "/modelsmith.manifest.json"), (std::set<std::string>{"a.txt", "c.txt"}));
}

TEST_F(PublicationTest, AnOverwriteThatNeverPublishesLeavesThePreviousOutputWhole) {
  PublishFiles({{"a.txt", "old a"}, {"b.txt", "old b"}}, false);
  {
    Publication p = Open(true);
    ASSERT_TRUE(p.WriteSmall(p.UriOf("a.txt"), "new a", "data").ok());
    absl::StatusOr<v1::Artifact> big = p.Write(
        p.UriOf("big.bin"), "data",
        [](PipelinedWriter& out) -> absl::StatusOr<WrittenObject> {
          std::string bytes(3 << 20, 'x');
          if (absl::Status s = out.Append({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}); !s.ok())
            return s;
          return WrittenObject{bytes.size(), [](const RandomAccessObject&) { return absl::OkStatus(); }};
        },
        tracker_, context_);
    ASSERT_TRUE(big.ok()) << big.status();
    EXPECT_FALSE(big->sha256().empty());
    // The job fails here: the publication goes away unpublished.
  }
  EXPECT_EQ(Listing(out_), (std::set<std::string>{"a.txt", "b.txt", "modelsmith.manifest.json"}));
  EXPECT_EQ(ExpectWhole(out_ + "/modelsmith.manifest.json"), (std::set<std::string>{"a.txt", "b.txt"}));
}

TEST_F(PublicationTest, AFailedCheckAbortsThatArtifactAndLeavesNothing) {
  Publication p = Open(false);
  absl::StatusOr<v1::Artifact> bad = p.Write(
      p.UriOf("bad.bin"), "data",
      [](PipelinedWriter& out) -> absl::StatusOr<WrittenObject> {
        if (absl::Status s = out.Append({reinterpret_cast<const std::byte*>("abc"), 3}); !s.ok()) return s;
        return WrittenObject{3, [](const RandomAccessObject&) {
                               return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH", "planted");
                             }};
      },
      tracker_, context_);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(ReasonOf(bad.status()), "VERIFY_MISMATCH");
  EXPECT_TRUE(!fs::exists(out_) || fs::is_empty(out_));
}

TEST_F(PublicationTest, AStopBeforePublishLeavesThePreviousOutputWhole) {
  PublishFiles({{"a.txt", "old a"}}, false);
  Publication p = Open(true);
  ASSERT_TRUE(p.WriteSmall(p.UriOf("a.txt"), "new a", "data").ok());
  context_.StopAfterProgressReports(1);
  tracker_.SetPhase("stopping");  // a report, which makes the context ask for a stop
  tracker_.Flush();
  v1::JobResult result;
  absl::Status published = p.Publish({{"kind", "test"}}, result, tracker_, context_);
  EXPECT_TRUE(absl::IsCancelled(published)) << published;
  EXPECT_EQ(ReadFile(out_ + "/a.txt"), "old a");
  EXPECT_EQ(ExpectWhole(out_ + "/modelsmith.manifest.json"), (std::set<std::string>{"a.txt"}));
}

TEST_F(PublicationTest, OneFileOutputKeepsItsSiblingsAndManifestBeside) {
  const std::string file = root_.path() + "/model.gguf";
  {
    absl::StatusOr<Publication> p = Publication::ForFile(router_, file, false, 1, "test.output");
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_TRUE(p->WriteSmall(root_.path() + "/model-00001-of-00002.gguf", "one", "model").ok());
    ASSERT_TRUE(p->WriteSmall(root_.path() + "/model-00002-of-00002.gguf", "two", "model").ok());
    v1::JobResult result;
    ASSERT_TRUE(p->Publish({{"kind", "test"}}, result, tracker_, context_).ok());
  }
  EXPECT_EQ(ExpectWhole(file + ".manifest.json"),
            (std::set<std::string>{"model-00001-of-00002.gguf", "model-00002-of-00002.gguf"}));
  // A part is occupied: without overwrite the output is refused, naming the part.
  absl::StatusOr<Publication> again =
      Publication::ForFile(router_, file, false, 1, "test.output", {root_.path() + "/model-00002-of-00002.gguf"});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(ReasonOf(again.status()), "OUTPUT_EXISTS");
  // Overwritten as one file: the parts the new manifest does not list go.
  {
    absl::StatusOr<Publication> p = Publication::ForFile(router_, file, true, 1, "test.output");
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE(p->WriteSmall(file, "whole", "model").ok());
    v1::JobResult result;
    ASSERT_TRUE(p->Publish({{"kind", "test"}}, result, tracker_, context_).ok());
  }
  EXPECT_EQ(Listing(root_.path()), (std::set<std::string>{"model.gguf", "model.gguf.manifest.json"}));
}

// Through a whole job: a shard job overwriting a good output and stopped midway leaves it whole.
TEST_F(PublicationTest, StoppedShardOverwriteLeavesThePreviousShardsWhole) {
  const std::string input = root_.path() + "/model.safetensors";
  std::vector<testing::F32Tensor> tensors;
  for (int i = 0; i < 8; ++i) tensors.push_back(testing::Random("t" + std::to_string(i) + ".weight", {128, 128}, i));
  testing::WriteSafetensors(input, tensors);
  JobRun run;
  run.job_id = "first";
  run.spec.mutable_shard()->set_input(input);
  run.spec.mutable_shard()->set_output(out_);
  run.spec.mutable_shard()->set_max_shard_size("150KB");
  run.router = &router_;
  RecordingContext first;
  ASSERT_TRUE(RunJob(run, first).ok());
  const std::set<std::string> before = ExpectWhole(out_ + "/modelsmith.manifest.json");
  ASSERT_GT(before.size(), 3u);

  int stopped = 0;
  for (size_t stop_after : {1u, 2u, 3u, 4u}) {
    run.job_id = "second";
    run.spec.mutable_shard()->set_max_shard_size("300KB");  // other names, other sizes
    run.spec.mutable_shard()->set_overwrite(true);
    RecordingContext stopping;
    stopping.StopAfterProgressReports(stop_after);
    absl::StatusOr<v1::JobResult> second = RunJob(run, stopping);
    if (second.ok()) break;  // ran to the end before the stop came: nothing left to test
    EXPECT_TRUE(absl::IsCancelled(second.status())) << second.status();
    ++stopped;
    EXPECT_EQ(ExpectWhole(out_ + "/modelsmith.manifest.json"), before) << "stopped after " << stop_after;
    EXPECT_EQ(Listing(out_).size(), before.size() + 1) << "staging files or new shards were left behind";
  }
}

}  // namespace
}  // namespace modelsmith
