// Several modelsmithd replicas on one PostgreSQL (started by the test on loopback) are one
// service: jobs submitted through any replica run on some replica exactly once, even when one is
// killed with SIGKILL or paused past its lease; any replica watches and cancels any job;
// idempotent submits hold across replicas; replicas may start together on an empty database.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <thread>

#include "nlohmann/json.hpp"
#include "tests/support/job_client.h"
#include "tests/support/metrics_scrape.h"
#include "tests/support/postgres_server.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kLease[] = "2";  // seconds: a dead replica's jobs move on quickly

class ReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(postgres_.started()) << postgres_.error();
    database_ = postgres_.NewDatabase("replicas");
    ASSERT_FALSE(database_.empty()) << postgres_.error();
    data_ = dir_.path() + "/data";
    fs::create_directories(data_ + "/hf");
    MakeCheckpoint(data_ + "/hf/model.safetensors",
                   {"--layers", "2", "--hidden", "128", "--intermediate", "256", "--dtype", "F32"});
  }

  // A replica named `name` with `workers` workers, every job paced to `io_limit` bytes a second.
  std::unique_ptr<ServerProcess> StartReplica(const std::string& name, const std::string& workers = "2",
                                              const std::string& io_limit = "2MB", const std::string& lease = kLease,
                                              bool with_metrics = false) {
    auto replica = std::make_unique<ServerProcess>(
        data_,
        std::vector<std::string>{"--database", database_, "--replica-id", name, "--lease-seconds", lease, "--workers",
                                 workers, "--job-io-limit", io_limit, "--shutdown-grace", "1"},
        with_metrics);
    EXPECT_TRUE(replica->started()) << name;
    return replica;
  }

  // The jobs replica `name` holds a lease on and runs now.
  int RunningOn(const std::string& name) {
    const std::string out = postgres_.Psql("replicas", "SELECT count(*) FROM jobs WHERE state = 2 AND lease_owner = '" +
                                                           name + "' AND lease_expires > clock_timestamp()");
    return out.empty() ? -1 : std::stoi(out);
  }
  std::string LeaseOwner(const std::string& id) {
    std::string out = postgres_.Psql("replicas", "SELECT lease_owner FROM jobs WHERE id = '" + id + "'");
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  v1::SubmitJobRequest Request(int i) {
    const std::string out = data_ + "/out/" + std::to_string(i);
    v1::SubmitJobRequest request;
    switch (i % 3) {
      case 0: request = ShardRequest(data_ + "/hf/model.safetensors", out, "100KB"); break;
      case 1: {
        v1::ConvertSpec* spec = request.mutable_spec()->mutable_convert();
        spec->set_input(data_ + "/hf/model.safetensors");
        spec->set_output(out);
        spec->set_target_format(v1::TARGET_FORMAT_SAFETENSORS);
        spec->set_dtype("bf16");
        break;
      }
      default: {
        v1::QuantizeSpec* spec = request.mutable_spec()->mutable_quantize();
        spec->set_input(data_ + "/hf");
        spec->set_output(out);
        spec->set_scheme("bnb_nf4");
        break;
      }
    }
    return request;
  }

  // Every file under `dir` whose name is a staging name (a writer that never committed).
  static std::vector<std::string> StagingFilesIn(const std::string& dir) {
    std::vector<std::string> staging;
    if (!fs::exists(dir)) return staging;
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with(".") && name.find("staging") != std::string::npos) staging.push_back(entry.path());
    }
    return staging;
  }

  static nlohmann::json ManifestOf(const std::string& dir) {
    std::ifstream in(dir + "/modelsmith.manifest.json");
    return in ? nlohmann::json::parse(in, nullptr, false) : nlohmann::json();
  }

  // How many times the logs record job `id` as succeeded.
  static int SucceededLines(const std::vector<std::string>& logs, const std::string& id) {
    int lines = 0;
    for (const std::string& log : logs) {
      size_t at = 0;
      while ((at = log.find(id, at)) != std::string::npos) {
        const size_t end = log.find('\n', at);
        lines += log.substr(at, end - at).find("succeeded") != std::string::npos;
        at = end == std::string::npos ? log.size() : end;
      }
    }
    return lines;
  }

  PostgresServer postgres_;
  TempDir dir_;
  std::string database_;
  std::string data_;
};

TEST_F(ReplicasTest, SixtyJobsOnThreeReplicasAllSucceedOnceThroughAKill) {
  std::vector<std::unique_ptr<ServerProcess>> replicas;
  for (const char* name : {"r0", "r1", "r2"}) replicas.push_back(StartReplica(name));
  std::vector<std::unique_ptr<v1::JobService::Stub>> stubs;
  for (const auto& r : replicas) {
    ASSERT_TRUE(r->started());
    stubs.push_back(Connect(r->address()));
  }
  constexpr int kJobs = 60;
  std::vector<std::string> ids;
  for (int i = 0; i < kJobs; ++i) {
    v1::Job job;
    const grpc::Status status = Submit(*stubs[i % 3], Request(i), &job);
    ASSERT_TRUE(status.ok()) << i << ": " << status.error_message();
    ids.push_back(job.id());
  }
  // Kill r1 while it runs two jobs (bounded: 60 s).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int running = 0;
  while ((running = RunningOn("r1")) < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(running, 2) << "r1 never ran two jobs at once";
  replicas[1]->Kill();
  // What r1 held when it died: its rows stay RUNNING under its name until another replica claims
  // them after the lease expires.
  const std::string killed_running =
      postgres_.Psql("replicas", "SELECT string_agg(id, ',') FROM jobs WHERE state = 2 AND lease_owner = 'r1'");
  // Two, unless one ended in the instant between the count and the kill.
  ASSERT_FALSE(killed_running.empty() || killed_running == "\n") << "r1 held no job when it died";
  std::vector<std::string> logs = {replicas[1]->Log()};

  std::map<std::string, int> attempts;
  for (int i = 0; i < kJobs; ++i) {
    const v1::Job done = WaitFor(
        *stubs[i % 3 == 1 ? 0 : i % 3], ids[i], [](const v1::Job& j) { return IsTerminal(j.state()); },
        std::chrono::seconds(240));
    ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << ids[i] << ": " << done.error().message();
    attempts[ids[i]] = done.attempt();
    const nlohmann::json manifest = ManifestOf(data_ + "/out/" + std::to_string(i));
    ASSERT_TRUE(manifest.is_object()) << i;
    EXPECT_EQ(manifest["job_id"], ids[i]) << i;
  }
  EXPECT_TRUE(StagingFilesIn(data_ + "/out").empty()) << StagingFilesIn(data_ + "/out")[0];
  // The two jobs r1 ran when it died ran again elsewhere, as their second attempt.
  int rerun = 0;
  for (const auto& [id, attempt] : attempts) {
    if (killed_running.find(id) != std::string::npos) {
      EXPECT_EQ(attempt, 2u) << id;
      ++rerun;
    }
  }
  EXPECT_EQ(rerun, std::count(killed_running.begin(), killed_running.end(), ',') + 1);
  for (int r : {0, 2}) {
    EXPECT_EQ(replicas[r]->Terminate(), 0);
    logs.push_back(replicas[r]->Log());
  }
  // Published by exactly one attempt: one "succeeded" record per job across every replica.
  for (const std::string& id : ids) EXPECT_EQ(SucceededLines(logs, id), 1) << id;
}

TEST_F(ReplicasTest, AnyReplicaWatchesCancelsAndDeduplicatesAnyJob) {
  auto a = StartReplica("a", "2", "300KB");
  ASSERT_TRUE(a->started());
  auto stub_a = Connect(a->address());
  v1::Job watched, doomed;
  ASSERT_TRUE(Submit(*stub_a, Request(0), &watched).ok());
  ASSERT_TRUE(Submit(*stub_a, Request(1), &doomed).ok());
  WaitFor(*stub_a, doomed.id(), [](const v1::Job& j) { return j.state() == v1::JOB_STATE_RUNNING; });
  WaitFor(*stub_a, watched.id(), [](const v1::Job& j) { return j.state() == v1::JOB_STATE_RUNNING; });
  ASSERT_EQ(LeaseOwner(watched.id()), "a");
  ASSERT_EQ(LeaseOwner(doomed.id()), "a");
  auto b = StartReplica("b", "2", "1MB");
  ASSERT_TRUE(b->started());
  auto stub_b = Connect(b->address());

  // Cancel through b the job a runs: it ends within about a second.
  grpc::ClientContext context;
  v1::CancelJobRequest cancel;
  cancel.set_id(doomed.id());
  v1::Job after;
  const auto asked = std::chrono::steady_clock::now();
  ASSERT_TRUE(stub_b->CancelJob(&context, cancel, &after).ok());
  const v1::Job cancelled = WaitForEnd(*stub_b, doomed.id());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count();
  EXPECT_EQ(cancelled.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_LT(seconds, 5.0) << "a cancel through another replica took " << seconds << " s";
  std::printf("cancel through another replica: CANCELLED after %.2f s\n", seconds);
  EXPECT_FALSE(fs::exists(data_ + "/out/1/modelsmith.manifest.json"));

  // Watch through b the job a runs: its progress and final state.
  grpc::Status status;
  const std::vector<v1::JobEvent> events = WatchAll(*stub_b, watched.id(), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const EventSummary summary = Summarize(events, v1::JOB_STATE_SUCCEEDED);
  EXPECT_GT(summary.progress_events, 0);
  EXPECT_TRUE(summary.monotonic);
  EXPECT_TRUE(summary.reached_final_state);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().job().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(LeaseOwner(watched.id()), "a") << "the job moved";

  // The same request_id through both replicas is one job.
  v1::SubmitJobRequest request = Request(2);
  request.set_request_id("once-only");
  v1::Job first, second;
  ASSERT_TRUE(Submit(*stub_a, request, &first).ok());
  ASSERT_TRUE(Submit(*stub_b, request, &second).ok());
  EXPECT_EQ(first.id(), second.id());
  // And the output a queued or running job holds is held on every replica.
  v1::SubmitJobRequest clash = Request(5);
  clash.mutable_spec()->mutable_quantize()->set_output(data_ + "/out/2");
  v1::Job refused;
  const grpc::Status busy = Submit(*stub_b, clash, &refused);  // the job takes a second or more
  EXPECT_EQ(busy.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << busy.error_message();
  EXPECT_EQ(ErrorInfoOf(busy).reason(), "OUTPUT_BUSY");
  EXPECT_EQ(WaitForEnd(*stub_b, first.id()).state(), v1::JOB_STATE_SUCCEEDED);

  // Paging alternates replicas: one page from each, every job once.
  std::set<std::string> listed;
  std::string token;
  for (int page = 0; page < 10; ++page) {
    grpc::ClientContext list_context;
    v1::ListJobsRequest list;
    list.set_page_size(1);
    list.set_page_token(token);
    v1::ListJobsResponse response;
    ASSERT_TRUE((page % 2 == 0 ? stub_a : stub_b)->ListJobs(&list_context, list, &response).ok());
    for (const v1::Job& job : response.jobs()) EXPECT_TRUE(listed.insert(job.id()).second) << job.id();
    token = response.next_page_token();
    if (token.empty()) break;
  }
  EXPECT_EQ(listed, (std::set<std::string>{watched.id(), doomed.id(), first.id()}));
}

TEST_F(ReplicasTest, APausedReplicaNeitherRecordsNorPublishesAJobAnotherTookOver) {
  auto a = StartReplica("a", "1", "200KB");
  ASSERT_TRUE(a->started());
  auto stub_a = Connect(a->address());
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_a, Request(1), &job).ok());
  WaitFor(*stub_a, job.id(), [](const v1::Job& j) { return j.progress().bytes_done() > 0; });
  ASSERT_EQ(LeaseOwner(job.id()), "a");
  auto b = StartReplica("b", "1", "20MB");
  ASSERT_TRUE(b->started());
  auto stub_b = Connect(b->address());
  ASSERT_EQ(kill(a->pid(), SIGSTOP), 0);
  // b takes the job over once a's lease expires, and finishes it.
  const v1::Job done = WaitForEnd(*stub_b, job.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error().message();
  EXPECT_EQ(done.attempt(), 2u);
  EXPECT_EQ(LeaseOwner(job.id()), "b");
  const std::string manifest_before = [&] {
    std::ifstream in(data_ + "/out/1/modelsmith.manifest.json");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  ASSERT_FALSE(manifest_before.empty());
  ASSERT_EQ(kill(a->pid(), SIGCONT), 0);
  // a wakes up, finds its lease gone, and stops (bounded: 30 s).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (a->Log().find("lost the job's lease") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(a->Log().find("lost the job's lease"), std::string::npos) << a->Log();
  std::this_thread::sleep_for(std::chrono::seconds(2));  // anything a would still write, it has written
  const v1::Job after = GetJob(*stub_b, job.id());
  EXPECT_EQ(after.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(after.attempt(), 2u) << "the paused replica recorded its run";
  std::ifstream in(data_ + "/out/1/modelsmith.manifest.json");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), manifest_before) << "the paused replica published";
  EXPECT_TRUE(StagingFilesIn(data_ + "/out").empty());
  EXPECT_EQ(SucceededLines({a->Log()}, job.id()), 0);
  EXPECT_EQ(a->Terminate(), 0);
}

// SIGTERM hands a replica's running jobs over at once, not after their lease (30 s here) expires;
// the metrics show the whole queue and the live replicas on every replica.
TEST_F(ReplicasTest, ASigtermedReplicaHandsItsJobsOverAtOnce) {
  auto a = StartReplica("a", "1", "100KB", "30", /*with_metrics=*/true);  // its job runs for ~20 s
  ASSERT_TRUE(a->started());
  auto stub_a = Connect(a->address());
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_a, Request(1), &job).ok());
  WaitFor(*stub_a, job.id(), [](const v1::Job& j) { return j.progress().bytes_done() > 0; });
  ASSERT_EQ(LeaseOwner(job.id()), "a");
  v1::Job waiting;
  ASSERT_TRUE(Submit(*stub_a, Request(4), &waiting).ok());  // a's one worker is busy: it stays queued
  auto b = StartReplica("b", "2", "200KB", "30", /*with_metrics=*/true);
  ASSERT_TRUE(b->started());
  auto stub_b = Connect(b->address());
  WaitFor(*stub_b, waiting.id(), [](const v1::Job& j) { return j.state() == v1::JOB_STATE_RUNNING; });
  ASSERT_EQ(LeaseOwner(waiting.id()), "b");
  // Both replicas show both running jobs and two live replicas (figures refresh every 5 s).
  for (ServerProcess* replica : {a.get(), b.get()}) {
    std::string text;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    do {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      text = Scrape(replica->metrics_port());
    } while ((Sample(text, "modelsmith_replicas") != 2 || Sample(text, "modelsmith_jobs_running") != 2) &&
             std::chrono::steady_clock::now() < deadline);
    EXPECT_EQ(Sample(text, "modelsmith_replicas"), 2);
    EXPECT_EQ(Sample(text, "modelsmith_jobs_running"), 2);
    EXPECT_EQ(Sample(text, "modelsmith_queue_depth"), 0);
    EXPECT_EQ(Sample(text, "modelsmith_workers_busy"), 1);
  }
  const auto terminated = std::chrono::steady_clock::now();
  EXPECT_EQ(a->Terminate(), 0);
  // b's second worker takes a's job at once: far sooner than a's 30 s lease.
  const v1::Job moved = WaitFor(
      *stub_b, job.id(), [](const v1::Job& j) { return j.state() == v1::JOB_STATE_RUNNING && j.attempt() == 2; });
  EXPECT_EQ(LeaseOwner(job.id()), "b");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - terminated).count();
  EXPECT_LT(seconds, 15.0) << "the job waited for its lease to expire";
  std::printf("a SIGTERMed replica's job ran again on another after %.1f s (lease 30 s)\n", seconds);
  EXPECT_EQ(WaitForEnd(*stub_b, job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(WaitForEnd(*stub_b, waiting.id()).state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_NE(a->Log().find("grace period over"), std::string::npos) << a->Log();
}

TEST_F(ReplicasTest, TwoReplicasStartTogetherOnAnEmptyDatabase) {
  std::unique_ptr<ServerProcess> first, second;
  std::thread other([&] { second = StartReplica("two"); });
  first = StartReplica("one");
  other.join();
  ASSERT_TRUE(first->started());
  ASSERT_TRUE(second->started());
  EXPECT_EQ(postgres_.Psql("replicas", "SELECT count(*), max(version) FROM modelsmith_schema"), "4|4\n");
  for (int i = 0; i < 2; ++i) {
    auto stub = Connect((i == 0 ? first : second)->address());
    v1::Job job;
    ASSERT_TRUE(Submit(*stub, Request(i), &job).ok());
    EXPECT_EQ(WaitForEnd(*stub, job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  }
}

}  // namespace
}  // namespace modelsmith::testing
