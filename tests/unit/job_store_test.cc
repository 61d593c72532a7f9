// The JobStore contract, run against both stores: SQLite in a temp file, and PostgreSQL started by
// the test itself (tests/support/postgres_server.h). Then what only the shared store has:
// migrations under concurrent starts, a newer schema refused, a server restart survived, an
// unreachable server and a password kept out of every message.
#include "server/job_store.h"

#include <gtest/gtest.h>

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
  EXPECT_EQ(postgres_.Psql("fresh", "SELECT count(*) FROM modelsmith_schema"), "1\n");
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
