// The JobStore contract, run against both stores: SQLite in a temp file, and PostgreSQL started by
// the test itself (tests/support/postgres_server.h). Then what only the shared store has:
// migrations under concurrent starts, a newer schema refused, a server restart survived, an
// unreachable server and a password kept out of every message.
#include "server/job_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "tests/support/postgres_server.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

using testing::PostgresServer;

v1::Job MakeJob(const std::string& id, v1::JobState state, const std::string& request_id = "") {
  v1::Job job;
  job.set_id(id);
  job.set_kind(v1::JOB_KIND_SHARD);
  job.set_state(state);
  job.set_request_id(request_id);
  job.mutable_spec()->mutable_shard()->set_input("/in/" + id);
  return job;
}

class JobStoreContract : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "sqlite") {
      url_ = "sqlite:" + dir_.path() + "/jobs.db";
    } else {
      postgres_ = std::make_unique<PostgresServer>();
      ASSERT_TRUE(postgres_->started()) << postgres_->error();
      url_ = postgres_->NewDatabase("jobs");
      ASSERT_FALSE(url_.empty()) << postgres_->error();
    }
  }
  std::unique_ptr<JobStore> OpenStore() {
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(url_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  TempDir dir_;
  std::unique_ptr<PostgresServer> postgres_;
  std::string url_;
};

TEST_P(JobStoreContract, InsertGetUpdate) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Insert(MakeJob("j1", v1::JOB_STATE_QUEUED), "fp").ok());
  EXPECT_EQ(store->Get("j1")->spec().shard().input(), "/in/j1");
  v1::Job job = *store->Get("j1");
  job.set_state(v1::JOB_STATE_RUNNING);
  job.set_attempt(2);
  ASSERT_TRUE(store->Update(job).ok());
  EXPECT_EQ(store->Get("j1")->attempt(), 2u);
  EXPECT_TRUE(absl::IsAlreadyExists(store->Insert(MakeJob("j1", v1::JOB_STATE_QUEUED), "fp")));
  EXPECT_TRUE(absl::IsNotFound(store->Get("nope").status()));
  EXPECT_TRUE(absl::IsNotFound(store->Update(MakeJob("nope", v1::JOB_STATE_QUEUED))));
}

TEST_P(JobStoreContract, SurvivesReopen) {
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Insert(MakeJob("j1", v1::JOB_STATE_RUNNING), "fp", "/out/j1").ok());
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto running = store->ListInState(v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_EQ(running->size(), 1u);
  EXPECT_EQ((*running)[0].id(), "j1");
  auto held = store->ListHeldOutputs();
  ASSERT_TRUE(held.ok()) << held.status();
  ASSERT_EQ(held->size(), 1u);
  EXPECT_EQ((*held)[0], std::make_pair(std::string("j1"), std::string("/out/j1")));
}

TEST_P(JobStoreContract, RequestIdIsUnique) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Insert(MakeJob("j1", v1::JOB_STATE_QUEUED, "req"), "fp1").ok());
  EXPECT_TRUE(absl::IsAlreadyExists(store->Insert(MakeJob("j2", v1::JOB_STATE_QUEUED, "req"), "fp2")));
  auto found = store->FindByRequestId("req");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->first.id(), "j1");
  EXPECT_EQ((*found)->second, "fp1");
  EXPECT_FALSE(store->FindByRequestId("other")->has_value());
  // Jobs without a request_id do not collide.
  EXPECT_TRUE(store->Insert(MakeJob("j3", v1::JOB_STATE_QUEUED), "fp").ok());
  EXPECT_TRUE(store->Insert(MakeJob("j4", v1::JOB_STATE_QUEUED), "fp").ok());
}

TEST_P(JobStoreContract, ListsNewestFirstWithFiltersAndCursor) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(
        store->Insert(MakeJob("j" + std::to_string(i), i % 2 ? v1::JOB_STATE_FAILED : v1::JOB_STATE_SUCCEEDED), "fp")
            .ok());
  }
  auto page = store->List(v1::JOB_STATE_UNSPECIFIED, v1::JOB_KIND_UNSPECIFIED, 0, 2);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].job.id(), "j4");
  EXPECT_EQ((*page)[1].job.id(), "j3");
  auto next = store->List(v1::JOB_STATE_UNSPECIFIED, v1::JOB_KIND_UNSPECIFIED, (*page)[1].seq, 10);
  ASSERT_EQ(next->size(), 3u);
  EXPECT_EQ((*next)[0].job.id(), "j2");
  auto failed = store->List(v1::JOB_STATE_FAILED, v1::JOB_KIND_UNSPECIFIED, 0, 10);
  ASSERT_EQ(failed->size(), 2u);
  EXPECT_EQ((*failed)[0].job.id(), "j3");
  EXPECT_TRUE(store->List(v1::JOB_STATE_UNSPECIFIED, v1::JOB_KIND_CONVERT, 0, 10)->empty());
}

// Two stores on one database (two replicas): each sees the other's rows, and a page cursor taken
// from one continues on the other.
TEST_P(JobStoreContract, TwoStoresOnOneDatabaseShareRowsAndCursors) {
  auto a = OpenStore();
  auto b = OpenStore();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  for (int i = 0; i < 6; ++i) {
    JobStore& store = i % 2 ? *b : *a;
    ASSERT_TRUE(store.Insert(MakeJob("j" + std::to_string(i), v1::JOB_STATE_QUEUED), "fp").ok());
  }
  auto first = a->List(v1::JOB_STATE_UNSPECIFIED, v1::JOB_KIND_UNSPECIFIED, 0, 3);
  ASSERT_TRUE(first.ok()) << first.status();
  auto rest = b->List(v1::JOB_STATE_UNSPECIFIED, v1::JOB_KIND_UNSPECIFIED, first->back().seq, 10);
  ASSERT_TRUE(rest.ok()) << rest.status();
  std::vector<std::string> ids;
  for (const auto& row : *first) ids.push_back(row.job.id());
  for (const auto& row : *rest) ids.push_back(row.job.id());
  EXPECT_EQ(ids, (std::vector<std::string>{"j5", "j4", "j3", "j2", "j1", "j0"}));
  EXPECT_TRUE(absl::IsAlreadyExists(b->Insert(MakeJob("j0", v1::JOB_STATE_QUEUED), "fp")));
}

v1::Job SizedJob(const std::string& id, v1::JobState state, uint64_t estimated_peak_bytes) {
  v1::Job job = MakeJob(id, state);
  job.set_estimated_peak_bytes(estimated_peak_bytes);
  return job;
}

TEST_P(JobStoreContract, ClaimsTheOldestJobThatFitsAndNothingLeased) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_FALSE(store->ClaimNext("a", 30, 1000)->has_value()) << "an empty store has nothing to claim";
  ASSERT_TRUE(store->Insert(SizedJob("done", v1::JOB_STATE_SUCCEEDED, 1), "fp").ok());
  ASSERT_TRUE(store->Insert(SizedJob("big", v1::JOB_STATE_QUEUED, 1'000'000'000), "fp").ok());
  ASSERT_TRUE(store->Insert(SizedJob("small", v1::JOB_STATE_QUEUED, 100), "fp").ok());
  auto first = store->ClaimNext("a", 30, 1000);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->has_value());
  EXPECT_EQ((*first)->job.id(), "small") << "the oldest job that fits the claimant's budget";
  EXPECT_GT((*first)->token, 0);
  EXPECT_FALSE(store->ClaimNext("b", 30, 1000)->has_value()) << "a leased job was claimed twice";
  auto big = store->ClaimNext("b", 30, 2'000'000'000);
  ASSERT_TRUE(big.ok() && big->has_value());
  EXPECT_EQ((*big)->job.id(), "big");
  EXPECT_GT((*big)->token, (*first)->token);
  EXPECT_FALSE(store->ClaimNext("c", 30, UINT64_MAX)->has_value()) << "an ended job is never claimable";
}

// A replica that stalls past its lease loses the job: another claims it with a newer token, and
// the stalled one can neither renew nor record anything.
TEST_P(JobStoreContract, AnExpiredLeaseIsTakenOverAndTheOldTokenIsFencedOut) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Insert(SizedJob("j", v1::JOB_STATE_QUEUED, 1), "fp").ok());
  auto a = store->ClaimNext("a", 0.2, 10);
  ASSERT_TRUE(a.ok() && a->has_value());
  v1::Job running = (*a)->job;
  running.set_state(v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(store->UpdateFenced(running, (*a)->token).ok());
  ASSERT_TRUE(store->RenewLease("j", (*a)->token, 0.2).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // a stalls past its lease
  auto b = store->ClaimNext("b", 30, 10);
  ASSERT_TRUE(b.ok() && b->has_value()) << "an expired lease was not claimable";
  EXPECT_EQ((*b)->job.state(), v1::JOB_STATE_RUNNING) << "the claimant must see it ran before";
  EXPECT_GT((*b)->token, (*a)->token);

  v1::Job stale = running;
  stale.set_state(v1::JOB_STATE_SUCCEEDED);
  absl::Status fenced = store->UpdateFenced(stale, (*a)->token);
  EXPECT_EQ(fenced.code(), absl::StatusCode::kFailedPrecondition) << fenced;
  EXPECT_EQ(ReasonOf(fenced), "LEASE_LOST");
  EXPECT_EQ(ReasonOf(store->RenewLease("j", (*a)->token, 30)), "LEASE_LOST");
  EXPECT_EQ(ReasonOf(store->ReleaseLease("j", (*a)->token)), "LEASE_LOST");
  EXPECT_EQ(store->Get("j")->state(), v1::JOB_STATE_RUNNING) << "the stale replica's write landed";

  v1::Job attempt = (*b)->job;
  attempt.set_attempt(2);
  EXPECT_TRUE(store->UpdateFenced(attempt, (*b)->token).ok());
  EXPECT_TRUE(absl::IsNotFound(store->UpdateFenced(MakeJob("nope", v1::JOB_STATE_RUNNING), (*b)->token)));
}

TEST_P(JobStoreContract, AReleasedLeaseIsClaimableAtOnce) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Insert(SizedJob("j", v1::JOB_STATE_QUEUED, 1), "fp").ok());
  auto a = store->ClaimNext("a", 30, 10);
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_FALSE(store->ClaimNext("b", 30, 10)->has_value());
  ASSERT_TRUE(store->ReleaseLease("j", (*a)->token).ok());
  auto b = store->ClaimNext("b", 30, 10);
  ASSERT_TRUE(b.ok() && b->has_value()) << "a released job waited for its lease to expire";
  EXPECT_GT((*b)->token, (*a)->token);
}

TEST_P(JobStoreContract, ClaimByIdTakesOnlyThatJobAndOnlyWhenNobodyHoldsIt) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Insert(SizedJob("old", v1::JOB_STATE_QUEUED, 1), "fp").ok());
  ASSERT_TRUE(store->Insert(SizedJob("new", v1::JOB_STATE_QUEUED, 5'000'000'000), "fp").ok());
  auto taken = store->ClaimById("new", "a", 30);
  ASSERT_TRUE(taken.ok() && taken->has_value()) << "any size: a cancel takes the job it names";
  EXPECT_EQ((*taken)->job.id(), "new");
  EXPECT_FALSE(store->ClaimById("new", "b", 30)->has_value()) << "a held job was claimed twice";
  EXPECT_FALSE(store->ClaimById("absent", "b", 30)->has_value());
  auto next = store->ClaimNext("b", 30, UINT64_MAX);
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->job.id(), "old");
}

TEST_P(JobStoreContract, ACancelRequestReachesTheHolderAndTheNextClaimant) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Insert(SizedJob("j", v1::JOB_STATE_QUEUED, 1), "fp").ok());
  auto a = store->ClaimNext("a", 0.2, 10);
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_FALSE((*a)->cancel_requested);
  EXPECT_TRUE(store->ListCancelRequested("a")->empty());
  ASSERT_TRUE(store->RequestCancel("j").ok());
  EXPECT_EQ(*store->ListCancelRequested("a"), std::vector<std::string>{"j"});
  EXPECT_TRUE(store->ListCancelRequested("b")->empty()) << "another replica's job";
  EXPECT_TRUE(absl::IsNotFound(store->RequestCancel("absent")));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));  // a's lease expires: a died
  auto b = store->ClaimNext("b", 30, 10);
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_TRUE((*b)->cancel_requested) << "the next claimant must cancel it, not run it";
}

TEST_P(JobStoreContract, EventsComeBackInOrderPerJobAndEndedJobsArePruned) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Insert(MakeJob("a", v1::JOB_STATE_RUNNING), "fp").ok());
  ASSERT_TRUE(store->Insert(MakeJob("b", v1::JOB_STATE_SUCCEEDED), "fp").ok());
  EXPECT_EQ(*store->LastEventSeq("a"), 0);
  for (int i = 0; i < 5; ++i) {
    v1::JobEvent event;
    event.mutable_log()->set_message("a" + std::to_string(i));
    ASSERT_TRUE(store->AppendEvent("a", event).ok());
    event.mutable_log()->set_message("b" + std::to_string(i));
    ASSERT_TRUE(store->AppendEvent("b", event).ok());
  }
  auto events = store->ListEvents("a", 0, 3);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 3u);
  EXPECT_EQ((*events)[0].second.log().message(), "a0");
  EXPECT_EQ((*events)[2].second.log().message(), "a2");
  auto rest = store->ListEvents("a", (*events)[2].first, 100);
  ASSERT_EQ(rest->size(), 2u);
  EXPECT_EQ((*rest)[1].second.log().message(), "a4");
  EXPECT_EQ(*store->LastEventSeq("a"), (*rest)[1].first);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(store->PruneEvents(0.01).ok());
  EXPECT_EQ(store->ListEvents("a", 0, 100)->size(), 5u) << "a running job's events were pruned";
  EXPECT_TRUE(store->ListEvents("b", 0, 100)->empty()) << "an ended job's old events were kept";
}

TEST_P(JobStoreContract, HeartbeatsCountLiveReplicasAndActiveJobsAreCounted) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Heartbeat("a").ok());
  ASSERT_TRUE(store->Heartbeat("b").ok());
  ASSERT_TRUE(store->Heartbeat("a").ok());
  EXPECT_EQ(*store->CountLiveReplicas(60), 2);
  ASSERT_TRUE(store->RemoveReplica("b").ok());
  EXPECT_EQ(*store->CountLiveReplicas(60), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(*store->CountLiveReplicas(0.01), 0) << "a stale heartbeat counted";

  v1::Job mine = MakeJob("q1", v1::JOB_STATE_QUEUED);
  mine.set_owner("alice");
  ASSERT_TRUE(store->Insert(mine, "fp").ok());
  v1::Job running = MakeJob("r1", v1::JOB_STATE_RUNNING);
  running.set_owner("alice");
  ASSERT_TRUE(store->Insert(running, "fp").ok());
  v1::Job other = MakeJob("q2", v1::JOB_STATE_QUEUED);
  other.set_owner("bob");
  ASSERT_TRUE(store->Insert(other, "fp").ok());
  ASSERT_TRUE(store->Insert(MakeJob("done", v1::JOB_STATE_FAILED), "fp").ok());
  auto all = store->CountActive("");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->queued, 2);
  EXPECT_EQ(all->running, 1);
  auto alice = store->CountActive("alice");
  EXPECT_EQ(alice->queued + alice->running, 2);
}

TEST_P(JobStoreContract, SubmitLockExcludesOtherReplicasUntilReleased) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->LockSubmits().ok());
  store->UnlockSubmits();
  ASSERT_TRUE(store->LockSubmits().ok()) << "an unlocked submit lock could not be taken again";
  if (GetParam() == "postgresql") {
    // Another replica waits until the holder unlocks.
    auto other = OpenStore();
    ASSERT_NE(other, nullptr);
    std::atomic<bool> taken{false};
    std::thread waiter([&] {
      EXPECT_TRUE(other->LockSubmits().ok());
      taken = true;
      other->UnlockSubmits();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_FALSE(taken) << "two replicas held the submit lock at once";
    store->UnlockSubmits();
    waiter.join();
    EXPECT_TRUE(taken);
  } else {
    store->UnlockSubmits();
  }
}

TEST_P(JobStoreContract, ReleaseAllLeasesMakesEveryHeldJobClaimable) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Insert(SizedJob("j", v1::JOB_STATE_QUEUED, 1), "fp").ok());
  ASSERT_TRUE(store->ClaimNext("a", 30, 10)->has_value());
  EXPECT_FALSE(store->ClaimNext("b", 30, 10)->has_value());
  ASSERT_TRUE(store->ReleaseAllLeases().ok());
  EXPECT_TRUE(store->ClaimNext("b", 30, 10)->has_value());
}

// Replicas claiming at once, each through its own connection: every job goes to exactly one.
TEST_P(JobStoreContract, ConcurrentClaimantsNeverShareAJob) {
  auto setup = OpenStore();
  ASSERT_NE(setup, nullptr);
  constexpr int kJobs = 40;
  constexpr int kReplicas = 4;
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_TRUE(setup->Insert(SizedJob("j" + std::to_string(i), v1::JOB_STATE_QUEUED, 1), "fp").ok());
  }
  std::vector<std::vector<std::string>> claimed(kReplicas);
  std::vector<absl::Status> errors(kReplicas);
  std::vector<std::thread> replicas;
  for (int r = 0; r < kReplicas; ++r) {
    replicas.emplace_back([&, r] {
      absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(url_);
      if (!store.ok()) {
        errors[r] = store.status();
        return;
      }
      for (int round = 0; round < 2 * kJobs; ++round) {  // bounded: at most every job, twice over
        absl::StatusOr<std::optional<ClaimedJob>> job = (*store)->ClaimNext("r" + std::to_string(r), 60, 10);
        if (!job.ok()) {
          errors[r] = job.status();
          return;
        }
        if (!job->has_value()) return;
        claimed[r].push_back((*job)->job.id());
      }
    });
  }
  for (std::thread& t : replicas) t.join();
  std::map<std::string, int> times;
  for (int r = 0; r < kReplicas; ++r) {
    EXPECT_TRUE(errors[r].ok()) << errors[r];
    for (const std::string& id : claimed[r]) ++times[id];
  }
  EXPECT_EQ(times.size(), static_cast<size_t>(kJobs));
  for (const auto& [id, n] : times) EXPECT_EQ(n, 1) << id;
}

INSTANTIATE_TEST_SUITE_P(Stores, JobStoreContract, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

class PostgresJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(postgres_.started()) << postgres_.error(); }
  PostgresServer postgres_;
};

TEST_F(PostgresJobStoreTest, StoresStartingTogetherOnAnEmptyDatabaseMigrateOnce) {
  const std::string url = postgres_.NewDatabase("fresh");
  ASSERT_FALSE(url.empty()) << postgres_.error();
  constexpr int kReplicas = 4;
  std::vector<absl::Status> outcomes(kReplicas);
  std::vector<std::thread> starts;
  for (int i = 0; i < kReplicas; ++i) {
    starts.emplace_back([&, i] { outcomes[i] = JobStore::Open(url).status(); });
  }
  for (std::thread& t : starts) t.join();
  for (const absl::Status& s : outcomes) EXPECT_TRUE(s.ok()) << s;
  // Every step once: as many rows as versions, the newest the binary's.
  EXPECT_EQ(postgres_.Psql("fresh", "SELECT count(*), max(version) FROM modelsmith_schema"), "4|4\n");
}

// A replica wakes when another queues a job, releases a lease, asks for a cancel or appends an
// event; a progress write wakes nobody.
TEST_F(PostgresJobStoreTest, ChangesByAnotherReplicaWakeAListener) {
  const std::string url = postgres_.NewDatabase("wake");
  absl::StatusOr<std::unique_ptr<JobStore>> listener = JobStore::Open(url);
  absl::StatusOr<std::unique_ptr<JobStore>> writer = JobStore::Open(url);
  ASSERT_TRUE(listener.ok() && writer.ok());
  using std::chrono::milliseconds;
  ASSERT_TRUE((*listener)->WaitForChange(milliseconds(10)).ok());  // starts listening
  auto wait = [&] { return (*listener)->WaitForChange(milliseconds(3000)); };

  v1::Job job = MakeJob("j", v1::JOB_STATE_QUEUED);
  ASSERT_TRUE((*writer)->Insert(job, "fp").ok());
  auto queued = wait();
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_TRUE(queued->claimable);

  auto claimed = (*writer)->ClaimNext("w", 30, UINT64_MAX);
  ASSERT_TRUE(claimed.ok() && claimed->has_value());
  job.mutable_progress()->set_bytes_done(1);
  ASSERT_TRUE((*writer)->UpdateFenced(job, (*claimed)->token).ok());
  auto progress = (*listener)->WaitForChange(milliseconds(300));
  ASSERT_TRUE(progress.ok());
  EXPECT_FALSE(progress->claimable || progress->cancel || progress->event) << "a progress write woke a replica";

  ASSERT_TRUE((*writer)->RequestCancel("j").ok());
  auto cancel = wait();
  ASSERT_TRUE(cancel.ok());
  EXPECT_TRUE(cancel->cancel);
  ASSERT_TRUE((*writer)->AppendEvent("j", v1::JobEvent()).ok());
  auto event = wait();
  ASSERT_TRUE(event.ok());
  EXPECT_TRUE(event->event);
  ASSERT_TRUE((*writer)->ReleaseLease("j", (*claimed)->token).ok());
  auto released = wait();
  ASSERT_TRUE(released.ok());
  EXPECT_TRUE(released->claimable);
}

TEST_F(PostgresJobStoreTest, ASchemaNewerThanTheBinaryIsRefused) {
  const std::string url = postgres_.NewDatabase("newer");
  ASSERT_TRUE(JobStore::Open(url).ok());
  ASSERT_FALSE(postgres_.Psql("newer", "INSERT INTO modelsmith_schema VALUES (99)").empty()) << postgres_.error();
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(url);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(store.status()), "DATABASE_SCHEMA_NEWER");
}

TEST_F(PostgresJobStoreTest, AServerRestartIsSurvivedByReconnecting) {
  const std::string url = postgres_.NewDatabase("restart");
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(url);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Insert(MakeJob("before", v1::JOB_STATE_QUEUED), "fp").ok());
  postgres_.Stop();
  ASSERT_TRUE(postgres_.Restart()) << postgres_.error();
  absl::Status before = (*store)->Get("before").status();
  EXPECT_TRUE(before.ok()) << before;
  absl::Status after = (*store)->Insert(MakeJob("after", v1::JOB_STATE_QUEUED), "fp");
  EXPECT_TRUE(after.ok()) << after;
  EXPECT_EQ((*store)->ListInState(v1::JOB_STATE_QUEUED)->size(), 2u);
}

TEST_F(PostgresJobStoreTest, AnUnreachableServerIsUnavailableWithoutThePassword) {
  const std::string url = "postgresql://modelsmith:hunter2@127.0.0.1:1/jobs?connect_timeout=5";
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(url);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ReasonOf(store.status()), "DATABASE_UNAVAILABLE");
  EXPECT_EQ(std::string(store.status().message()).find("hunter2"), std::string::npos) << store.status();
  EXPECT_NE(std::string(store.status().message()).find("modelsmith:***@127.0.0.1:1"), std::string::npos)
      << store.status();
}

TEST(JobStoreUrl, OtherSchemesAreRefusedAndPasswordsRedacted) {
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open("mysql://root:pw@db/jobs");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(store.status()), "DATABASE_URL_INVALID");
  EXPECT_EQ(std::string(store.status().message()).find("pw@"), std::string::npos);
  EXPECT_EQ(RedactDatabaseUrl("postgresql://u:secret@h:5432/d?sslmode=require"),
            "postgresql://u:***@h:5432/d?sslmode=require");
  EXPECT_EQ(RedactDatabaseUrl("postgresql://h/d?user=u&password=secret&sslmode=verify-full"),
            "postgresql://h/d?user=u&password=***&sslmode=verify-full");
  EXPECT_EQ(RedactDatabaseUrl("postgresql://u@h/d"), "postgresql://u@h/d");
  EXPECT_EQ(RedactDatabaseUrl("sqlite:/var/lib/modelsmith/modelsmith.db"), "sqlite:/var/lib/modelsmith/modelsmith.db");
}

}  // namespace
}  // namespace modelsmith
