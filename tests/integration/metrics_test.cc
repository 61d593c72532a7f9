// The /metrics endpoint of the real modelsmithd, scraped with libcurl after a shard job.
#include <curl/curl.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "tests/support/job_client.h"
#include "tests/support/metrics_scrape.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

TEST(MetricsTest, BasicAuthProtectsTheScrape) {
  TempDir dir;
  const std::string data = dir.path() + "/data";
  std::filesystem::create_directories(data);
  CommandResult hash = RunCommand({"sh", "-c", "printf %s scrape-secret | sha256sum | cut -d' ' -f1"});
  ASSERT_EQ(hash.exit_code, 0);
  std::ofstream(dir.path() + "/metrics-auth")
      << "# user sha256:hex\nprometheus sha256:" << hash.out.substr(0, 64) << "\n";
  ServerProcess server(data, {"--metrics-auth-file", dir.path() + "/metrics-auth"}, /*with_metrics=*/true);
  ASSERT_GT(server.metrics_port(), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(server.metrics_port()) + "/metrics";
  auto status_of = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(url);
    return RunCommand(argv).out;
  };
  EXPECT_EQ(status_of({}), "401");
  EXPECT_EQ(status_of({"-u", "prometheus:wrong"}), "401");
  EXPECT_EQ(status_of({"-u", "prometheus:scrape-secret"}), "200");
}

TEST(MetricsTest, ScrapeShowsJobAndShardFigures) {
  TempDir dir;
  const std::string data = dir.path() + "/data";
  std::filesystem::create_directories(data);
  MakeCheckpoint(data + "/m.safetensors");
  ServerProcess server(data, {}, /*with_metrics=*/true);
  ASSERT_GT(server.metrics_port(), 0);
  auto stub = Connect(server.address());
  v1::Job job;
  ASSERT_TRUE(Submit(*stub, ShardRequest(data + "/m.safetensors", data + "/out", "100KB"), &job).ok());
  v1::Job done = WaitForEnd(*stub, job.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);

  const std::string text = Scrape(server.metrics_port());
  EXPECT_EQ(Sample(text, R"(modelsmith_jobs_total{kind="shard",state="succeeded"})"), 1);
  EXPECT_EQ(Sample(text, R"(modelsmith_jobs_total{kind="shard",state="failed"})"), 0);
  EXPECT_EQ(Sample(text, "modelsmith_shard_size_bytes_count"), 3);
  EXPECT_NEAR(Sample(text, "modelsmith_shard_imbalance_ratio"), done.result().figures().shard().imbalance_ratio(),
              1e-9);
  EXPECT_EQ(Sample(text, "modelsmith_read_bytes_total"), done.result().figures().bytes_read());
  EXPECT_EQ(Sample(text, "modelsmith_written_bytes_total"), done.result().figures().bytes_written());
  EXPECT_EQ(Sample(text, "modelsmith_tensors_processed_total"), 21);
  EXPECT_EQ(Sample(text, R"(modelsmith_job_duration_seconds_count{kind="shard"})"), 1);
  EXPECT_GT(Sample(text, R"(modelsmith_job_peak_resident_bytes{kind="shard"})"), 0);
  EXPECT_EQ(Sample(text, "modelsmith_queue_depth"), 0);
  EXPECT_EQ(Sample(text, "modelsmith_workers_busy"), 0);
  EXPECT_GT(Sample(text, "modelsmith_memory_budget_bytes"), 0);
  EXPECT_EQ(Sample(text, "modelsmith_memory_reserved_bytes"), 0);
  EXPECT_GT(Sample(text, "process_resident_memory_bytes"), 1e6);
  EXPECT_GT(Sample(text, "process_open_fds"), 0);
  EXPECT_GT(Sample(text, "process_start_time_seconds"), 1.7e9);
  EXPECT_GE(Sample(text, "process_cpu_seconds_total"), 0);
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(modelsmith_build_info\{revision="[^"]+",version="[^"]+"\} 1)")));
  EXPECT_EQ(text.find("job-"), std::string::npos) << "job ids must not be labels";
}

}  // namespace
}  // namespace modelsmith::testing
