// The server under concurrent callers: two submits racing for one output, and 500 WatchJob
// streams on a server with 2 workers while jobs run. Real modelsmithd on loopback; every loop is
// bounded in count and time.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "tests/support/job_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

// The states a watcher saw: the job's state when it attached, then every state change.
std::vector<v1::JobState> StatesSeen(const std::vector<v1::JobEvent>& events) {
  std::vector<v1::JobState> states;
  if (!events.empty() && events.front().has_job()) states.push_back(events.front().job().state());
  for (const v1::JobEvent& e : events) {
    if (e.has_state_change()) states.push_back(e.state_change().state());
  }
  return states;
}

class ConcurrencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/data";
    fs::create_directories(data_);
    model_ = data_ + "/model.safetensors";
    // About 1.3 MB: with --job-io-limit 1MB a shard job runs for a second or more.
    MakeCheckpoint(model_, {"--layers", "4", "--hidden", "128", "--intermediate", "344", "--vocab", "512"});
  }
  void Start(std::vector<std::string> args) {
    server_ = std::make_unique<ServerProcess>(data_, std::move(args));
    ASSERT_TRUE(server_->started());
    stub_ = Connect(server_->address());
  }
  size_t ShardFiles(const std::string& dir) {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(dir)) n += e.path().extension() == ".safetensors";
    return n;
  }

  TempDir dir_;
  std::string data_;
  std::string model_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(ConcurrencyTest, TwoSubmitsOnOneOutputOneIsRefusedAsBusy) {
  Start({"--workers", "2", "--job-io-limit", "1MB"});
  const std::string out = data_ + "/out";
  v1::Job first;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, out, "400KB"), &first).ok());
  ASSERT_EQ(WaitForEnd(*stub_, first.id()).state(), v1::JOB_STATE_SUCCEEDED);
  const size_t shards = ShardFiles(out);
  ASSERT_GT(shards, 1u);

  // The case that left 13 shards where 3 belong: two overwrites of a good output, at once.
  for (int round = 0; round < 3; ++round) {
    v1::SubmitJobRequest request = ShardRequest(model_, out, "400KB");
    request.mutable_spec()->mutable_shard()->set_overwrite(true);
    std::promise<void> go;
    std::shared_future<void> ready = go.get_future().share();
    auto submit = [&] {
      ready.wait();
      v1::Job job;
      grpc::Status status = Submit(*stub_, request, &job);
      return std::make_pair(status, job);
    };
    std::future<std::pair<grpc::Status, v1::Job>> a = std::async(std::launch::async, submit);
    std::future<std::pair<grpc::Status, v1::Job>> b = std::async(std::launch::async, submit);
    go.set_value();
    auto [status_a, job_a] = a.get();
    auto [status_b, job_b] = b.get();
    ASSERT_NE(status_a.ok(), status_b.ok()) << "round " << round << ": exactly one submit must be accepted ("
                                            << status_a.error_message() << " / " << status_b.error_message() << ")";
    const grpc::Status& refused = status_a.ok() ? status_b : status_a;
    const v1::Job& accepted = status_a.ok() ? job_a : job_b;
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    const google::rpc::ErrorInfo info = ErrorInfoOf(refused);
    EXPECT_EQ(info.reason(), "OUTPUT_BUSY");
    EXPECT_EQ(info.metadata().at("job_id"), accepted.id());
    EXPECT_EQ(info.metadata().at("field"), "shard.output");

    // Also an output inside the held one.
    v1::Job inner;
    grpc::Status nested = Submit(*stub_, ShardRequest(model_, out + "/nested", "400KB"), &inner);
    EXPECT_EQ(ErrorInfoOf(nested).reason(), "OUTPUT_BUSY");

    const v1::Job done = WaitForEnd(*stub_, accepted.id());
    EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error().message();
    EXPECT_EQ(ShardFiles(out), shards) << "round " << round;
    for (const v1::Artifact& artifact : done.result().artifacts())
      EXPECT_TRUE(fs::exists(artifact.uri())) << artifact.uri();
  }
}

TEST_F(ConcurrencyTest, FiveHundredWatchersSeeEveryStateChangeWithFewServerThreads) {
  Start({"--workers", "2", "--job-io-limit", "2MB"});
  constexpr int kJobs = 10;
  constexpr int kStreams = 500;
  constexpr int kChannels = 10;
  std::vector<std::string> ids;
  for (int j = 0; j < kJobs; ++j) {
    v1::Job job;
    ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, data_ + "/out" + std::to_string(j), "400KB"), &job).ok());
    ids.push_back(job.id());
  }
  // Streams spread over several connections, as many clients would open them.
  std::vector<std::unique_ptr<v1::JobService::Stub>> stubs;
  for (int c = 0; c < kChannels; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("modelsmith.test.channel", c);  // distinct arguments: a connection of its own
    stubs.push_back(v1::JobService::NewStub(
        grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args)));
  }
  std::vector<std::vector<v1::JobEvent>> events(kStreams);
  std::vector<grpc::Status> statuses(kStreams);
  std::vector<std::thread> watchers;
  for (int s = 0; s < kStreams; ++s) {
    watchers.emplace_back([&, s] { events[s] = WatchAll(*stubs[s % kChannels], ids[s % kJobs], &statuses[s]); });
  }

  // While the jobs run: GetJob latencies and the server's threads (bounded: 60 s at most).
  std::vector<double> latencies_ms;
  int most_threads = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    most_threads = std::max(most_threads, ThreadCountOf(server_->pid()));
    bool all_ended = true;
    for (const std::string& id : ids) {
      const auto begin = std::chrono::steady_clock::now();
      const v1::Job job = GetJob(*stub_, id);
      latencies_ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count());
      all_ended &= IsTerminal(job.state());
    }
    if (all_ended) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (std::thread& t : watchers) t.join();

  for (int s = 0; s < kStreams; ++s) {
    ASSERT_TRUE(statuses[s].ok()) << "stream " << s << ": " << statuses[s].error_message();
    const std::vector<v1::JobState> seen = StatesSeen(events[s]);
    // From whatever state the watcher attached in, every later state, once each, in order.
    const std::vector<v1::JobState> lifecycle = {v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED};
    ASSERT_FALSE(seen.empty()) << "stream " << s;
    auto from = std::find(lifecycle.begin(), lifecycle.end(), seen.front());
    ASSERT_NE(from, lifecycle.end()) << "stream " << s;
    EXPECT_EQ(seen, std::vector<v1::JobState>(from, lifecycle.end())) << "stream " << s;
    ASSERT_TRUE(events[s].back().has_job()) << "stream " << s;
    EXPECT_EQ(events[s].back().job().state(), v1::JOB_STATE_SUCCEEDED) << "stream " << s;
  }
  EXPECT_GT(most_threads, 0);
  EXPECT_LT(most_threads, 64) << "the server's thread count grew with the streams";
  std::sort(latencies_ms.begin(), latencies_ms.end());
  ASSERT_FALSE(latencies_ms.empty());
  // A figure, not an assertion: tests/bench/watch_bench measures it properly.
  std::printf("GetJob during %d streams: %zu calls, p50 %.2f ms, p99 %.2f ms; server threads at most %d\n", kStreams,
              latencies_ms.size(), latencies_ms[latencies_ms.size() / 2], latencies_ms[latencies_ms.size() * 99 / 100],
              most_threads);
}

}  // namespace
}  // namespace modelsmith::testing
