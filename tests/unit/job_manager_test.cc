// The job manager on a real SQLite store, a real worker pool and real shard jobs, with the
// before-start seam pausing a job between the pool's admission and its start.
#include "server/job_manager.h"

#include <gtest/gtest.h>

#include "google/protobuf/util/time_util.h"

#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>

#include "tests/support/f32_safetensors.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

using testing::Random;
using testing::WriteSafetensors;

// Holds each job at the seam until released.
class StartGate {
 public:
  void Wait(const std::string& id) {
    std::unique_lock lock(mutex_);
    arrived_.push_back(id);
    changed_.notify_all();
    changed_.wait(lock, [&] { return open_; });
  }
  // True once `count` jobs have reached the seam (waits at most 30 s).
  bool AwaitArrivals(size_t count) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(30), [&] { return arrived_.size() >= count; });
  }
  void Open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    changed_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> arrived_;
  bool open_ = false;
};

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/root";
    std::filesystem::create_directories(root_);
    input_ = root_ + "/model.safetensors";
    WriteSafetensors(input_, {Random("a.weight", {64, 64}, 1), Random("b.weight", {64, 64}, 2)});
    router_ = std::make_unique<StorageRouter>(std::vector<std::string>{root_});
    OpenManager();
  }
  void TearDown() override { CloseManager(); }

  void OpenManager() {
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(dir_.path() + "/jobs.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    pool_ = std::make_unique<WorkerPool>(1, uint64_t{1} << 30);
    manager_ = std::make_unique<JobManager>(*store_, *router_, *pool_, nullptr);
    ASSERT_TRUE(manager_->Start().ok());
    manager_->SetBeforeStartHookForTesting([this](const std::string& id) { gate_->Wait(id); });
  }
  void CloseManager() {
    if (gate_) gate_->Open();
    if (pool_) pool_->Shutdown();
    manager_.reset();
    pool_.reset();
    store_.reset();
  }

  v1::JobSpec Shard(const std::string& output) {
    v1::JobSpec spec;
    spec.mutable_shard()->set_input(input_);
    spec.mutable_shard()->set_output(output);
    spec.mutable_shard()->set_max_shard_size("10KB");
    return spec;
  }

  v1::Job WaitForEnd(const std::string& id) {
    for (int i = 0; i < 600; ++i) {
      absl::StatusOr<v1::Job> job = manager_->Get(id);
      if (job.ok() && (job->state() == v1::JOB_STATE_SUCCEEDED || job->state() == v1::JOB_STATE_FAILED ||
                       job->state() == v1::JOB_STATE_CANCELLED)) {
        return *job;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "job " << id << " did not end";
    return {};
  }

  TempDir dir_;
  std::string root_;
  std::string input_;
  std::unique_ptr<StorageRouter> router_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<JobManager> manager_;
  std::unique_ptr<StartGate> gate_ = std::make_unique<StartGate>();
};

TEST_F(JobManagerTest, CancelBetweenAdmissionAndStartEndsCancelledAndNeverRuns) {
  absl::StatusOr<v1::Job> job = manager_->Submit(Shard(root_ + "/out"), "");
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(gate_->AwaitArrivals(1));  // the pool admitted it; it has not started

  absl::StatusOr<v1::Job> cancelled = manager_->Cancel(job->id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(cancelled->attempt(), 0u);

  gate_->Open();  // the worker resumes: it must not start the job
  pool_->Shutdown();
  absl::StatusOr<v1::Job> stored = store_->Get(job->id());
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(stored->attempt(), 0u) << "the job ran";
  EXPECT_FALSE(std::filesystem::exists(root_ + "/out/modelsmith.manifest.json"));

  // After a restart on the same store, it is still CANCELLED and nothing runs it.
  CloseManager();
  gate_ = std::make_unique<StartGate>();
  OpenManager();
  gate_->Open();
  pool_->Shutdown();
  absl::StatusOr<v1::Job> after = manager_->Get(job->id());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(after->attempt(), 0u);
  EXPECT_FALSE(std::filesystem::exists(root_ + "/out/modelsmith.manifest.json"));
}

TEST_F(JobManagerTest, SecondJobOnAHeldOutputIsRefusedNamingTheHolder) {
  absl::StatusOr<v1::Job> first = manager_->Submit(Shard(root_ + "/out"), "");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(gate_->AwaitArrivals(1));

  for (const std::string& output : {root_ + "/out", root_ + "/out/", root_ + "/out/inner", root_}) {
    absl::StatusOr<v1::Job> second = manager_->Submit(Shard(output), "");
    ASSERT_FALSE(second.ok()) << output;
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << output;
    EXPECT_EQ(ReasonOf(second.status()), "OUTPUT_BUSY") << output;
    EXPECT_EQ(ContextOf(second.status())["job_id"], first->id()) << output;
    EXPECT_EQ(ContextOf(second.status())["field"], "shard.output") << output;
  }
  // A sibling whose name merely starts the same is another place.
  absl::StatusOr<v1::Job> sibling = manager_->Submit(Shard(root_ + "/out2"), "");
  EXPECT_TRUE(sibling.ok()) << sibling.status();

  gate_->Open();
  EXPECT_EQ(WaitForEnd(first->id()).state(), v1::JOB_STATE_SUCCEEDED);
  // Once the holder has ended, the output is free (overwrite, since it now holds files).
  v1::JobSpec again = Shard(root_ + "/out");
  again.mutable_shard()->set_overwrite(true);
  absl::StatusOr<v1::Job> third = manager_->Submit(again, "");
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(WaitForEnd(third->id()).state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(JobManagerTest, SubmitWhoseCallerLeftCreatesNoJob) {
  gate_->Open();
  absl::StatusOr<v1::Job> job = manager_->Submit(Shard(root_ + "/out"), "", [] { return false; });
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ReasonOf(job.status()), "CALLER_GONE");
  v1::ListJobsRequest request;
  absl::StatusOr<v1::ListJobsResponse> listed = manager_->List(request);
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->jobs_size(), 0);
}

TEST_F(JobManagerTest, ASlowPreflightHoldsUpNoOtherSubmitOrCancel) {
  gate_->Open();
  StartGate preflight_gate;
  const std::string slow_output = root_ + "/slow";
  manager_->SetBeforePreflightHookForTesting([&](const v1::JobSpec& spec) {
    if (spec.shard().output() == slow_output) preflight_gate.Wait(slow_output);
  });
  std::atomic<bool> slow_caller_waiting{true};
  std::future<absl::StatusOr<v1::Job>> slow = std::async(std::launch::async, [&] {
    return manager_->Submit(Shard(slow_output), "", [&] { return slow_caller_waiting.load(); });
  });
  ASSERT_TRUE(preflight_gate.AwaitArrivals(1));  // the slow submit is inside its preflight

  // Meanwhile another submit runs to the end, and a cancel answers.
  absl::StatusOr<v1::Job> other = manager_->Submit(Shard(root_ + "/other"), "");
  ASSERT_TRUE(other.ok()) << other.status();
  absl::StatusOr<v1::Job> cancelled = manager_->Cancel(other->id());
  ASSERT_TRUE(cancelled.ok() || absl::IsFailedPrecondition(cancelled.status())) << cancelled.status();
  WaitForEnd(other->id());

  // The slow submit's caller gives up; when its preflight ends, no job is created.
  slow_caller_waiting = false;
  preflight_gate.Open();
  absl::StatusOr<v1::Job> late = slow.get();
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(ReasonOf(late.status()), "CALLER_GONE");
  absl::StatusOr<v1::ListJobsResponse> listed = manager_->List(v1::ListJobsRequest());
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->jobs_size(), 1);
  EXPECT_EQ(listed->jobs(0).id(), other->id());
}

TEST_F(JobManagerTest, WatchSeesEveryStateChangeAndTheFinalJob) {
  absl::StatusOr<v1::Job> job = manager_->Submit(Shard(root_ + "/out"), "");
  ASSERT_TRUE(job.ok()) << job.status();
  std::mutex mutex;
  std::condition_variable woken;
  int wakes = 0;
  absl::StatusOr<std::shared_ptr<JobWatch>> watch = manager_->OpenWatch(job->id(), [&] {
    std::lock_guard lock(mutex);
    ++wakes;
    woken.notify_all();
  });
  ASSERT_TRUE(watch.ok());
  gate_->Open();
  std::vector<v1::JobEvent> events;
  for (int round = 0; round < 400; ++round) {
    JobWatch::Batch batch = (*watch)->Take();
    events.insert(events.end(), batch.events.begin(), batch.events.end());
    if (batch.done) break;
    std::unique_lock lock(mutex);
    woken.wait_for(lock, std::chrono::milliseconds(100));
  }
  ASSERT_GE(events.size(), 3u);
  EXPECT_TRUE(events.front().has_job());
  std::vector<v1::JobState> states;
  for (const v1::JobEvent& e : events) {
    if (e.has_state_change()) states.push_back(e.state_change().state());
  }
  EXPECT_EQ(states, (std::vector<v1::JobState>{v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED}));
  ASSERT_TRUE(events.back().has_job());
  EXPECT_EQ(events.back().job().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_GT(wakes, 0);
}

// Job times are exact enough to measure queue waits and short jobs: protobuf's own
// TimeUtil::GetCurrentTime has whole seconds only (server/clock.h).
TEST_F(JobManagerTest, JobTimesHaveSubSecondResolution) {
  gate_->Open();
  int32_t nanos = 0;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<v1::Job> job = manager_->Submit(Shard(root_ + "/out" + std::to_string(i)), "");
    ASSERT_TRUE(job.ok()) << job.status();
    const v1::Job done = WaitForEnd(job->id());
    nanos |= done.create_time().nanos() | done.start_time().nanos() | done.end_time().nanos();
    EXPECT_LE(google::protobuf::util::TimeUtil::TimestampToNanoseconds(done.create_time()),
              google::protobuf::util::TimeUtil::TimestampToNanoseconds(done.start_time()));
  }
  EXPECT_NE(nanos, 0) << "nine timestamps all on whole seconds";
}

}  // namespace
}  // namespace modelsmith
