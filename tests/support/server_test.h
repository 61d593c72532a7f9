// A test fixture with a data directory, a real modelsmithd started on demand on it, a gRPC stub,
// and the CLI pointed at that server.
#ifndef MODELSMITH_TESTS_SUPPORT_SERVER_TEST_H_
#define MODELSMITH_TESTS_SUPPORT_SERVER_TEST_H_

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/job_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/data";
    std::filesystem::create_directories(data_);
  }
  // Starts modelsmithd on data_ with extra flags, and connects stub_.
  void Start(std::vector<std::string> args = {}) {
    server_ = std::make_unique<ServerProcess>(data_, std::move(args));
    ASSERT_TRUE(server_->started());
    stub_ = Connect(server_->address());
  }
  // `modelsmith --server <address> ARGS...`.
  CommandResult Cli(std::vector<std::string> args) {
    std::vector<std::string> argv = {CliBinary(), "--server", server_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }

  // A cancelled or failed job leaves nothing: `dir` is absent or empty.
  static void ExpectNothingLeftIn(const std::string& dir) {
    if (!std::filesystem::exists(dir)) return;
    for (const auto& e : std::filesystem::directory_iterator(dir)) ADD_FAILURE() << "left behind: " << e.path();
  }

  // Submits `request` (to a server started with a low --job-io-limit), watches it live, cancels
  // it once it has read 2 MiB and expects: the CANCELLED state, nothing left in `output_dir`, and
  // a stream of at least two progress events with growing byte counts ending in the cancel.
  void CancelMidwayLeavesNothing(const v1::SubmitJobRequest& request, const std::string& output_dir) {
    v1::Job job;
    ASSERT_TRUE(Submit(*stub_, request, &job).ok());
    std::future<std::vector<v1::JobEvent>> events =
        std::async(std::launch::async, [&] { return WatchAll(*stub_, job.id()); });
    // The watch, which may subscribe after the first reports, has seen two progress events by
    // the time 2 MiB are read.
    EXPECT_EQ(CancelOnceUnderWay(*stub_, job.id(), 2 << 20), v1::JOB_STATE_CANCELLED);
    ExpectNothingLeftIn(output_dir);
    const EventSummary seen = Summarize(events.get(), v1::JOB_STATE_CANCELLED);
    EXPECT_GT(seen.progress_events, 1u);
    EXPECT_TRUE(seen.monotonic);
    EXPECT_GT(seen.last_bytes_done, 2u << 20);
    EXPECT_TRUE(seen.reached_final_state);
  }

  TempDir dir_;
  std::string data_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

}  // namespace modelsmith::testing

#endif  // MODELSMITH_TESTS_SUPPORT_SERVER_TEST_H_
