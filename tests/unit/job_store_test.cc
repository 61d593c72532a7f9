#include "server/job_store.h"

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace modelsmith {
namespace {

v1::Job MakeJob(const std::string& id, v1::JobState state, const std::string& request_id = "") {
  v1::Job job;
  job.set_id(id);
  job.set_kind(v1::JOB_KIND_SHARD);
  job.set_state(state);
  job.set_request_id(request_id);
  job.mutable_spec()->mutable_shard()->set_input("/in/" + id);
  return job;
}

TEST(JobStore, InsertGetUpdate) {
  TempDir dir;
  auto store = JobStore::Open(dir.path() + "/jobs.db");
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->Insert(MakeJob("j1", v1::JOB_STATE_QUEUED), "fp").ok());
  EXPECT_EQ((*store)->Get("j1")->spec().shard().input(), "/in/j1");
  v1::Job job = *(*store)->Get("j1");
  job.set_state(v1::JOB_STATE_RUNNING);
  job.set_attempt(2);
  ASSERT_TRUE((*store)->Update(job).ok());
  EXPECT_EQ((*store)->Get("j1")->attempt(), 2u);
  EXPECT_TRUE(absl::IsNotFound((*store)->Get("nope").status()));
  EXPECT_TRUE(absl::IsNotFound((*store)->Update(MakeJob("nope", v1::JOB_STATE_QUEUED))));
}

TEST(JobStore, SurvivesReopen) {
  TempDir dir;
  {
    auto store = JobStore::Open(dir.path() + "/jobs.db");
    ASSERT_TRUE((*store)->Insert(MakeJob("j1", v1::JOB_STATE_RUNNING), "fp").ok());
  }
  auto store = JobStore::Open(dir.path() + "/jobs.db");
  auto running = (*store)->ListInState(v1::JOB_STATE_RUNNING);
  ASSERT_TRUE(running.ok());
  ASSERT_EQ(running->size(), 1u);
  EXPECT_EQ((*running)[0].id(), "j1");
}

TEST(JobStore, RequestIdIsUnique) {
  TempDir dir;
  auto store = JobStore::Open(dir.path() + "/jobs.db");
  ASSERT_TRUE((*store)->Insert(MakeJob("j1", v1::JOB_STATE_QUEUED, "req"), "fp1").ok());
  EXPECT_TRUE(absl::IsAlreadyExists((*store)->Insert(MakeJob("j2", v1::JOB_STATE_QUEUED, "req"), "fp2")));
  auto found = (*store)->FindByRequestId("req");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_EQ((*found)->first.id(), "j1");
  EXPECT_EQ((*found)->second, "fp1");
  EXPECT_FALSE((*store)->FindByRequestId("other")->has_value());
  // Jobs without a request_id do not collide.
  EXPECT_TRUE((*store)->Insert(MakeJob("j3", v1::JOB_STATE_QUEUED), "fp").ok());
  EXPECT_TRUE((*store)->Insert(MakeJob("j4", v1::JOB_STATE_QUEUED), "fp").ok());
}

TEST(JobStore, ListsNewestFirstWithFiltersAndCursor) {
  TempDir dir;
  auto store = JobStore::Open(dir.path() + "/jobs.db");
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(
        (*store)
            ->Insert(MakeJob("j" + std::to_string(i), i % 2 ? v1::JOB_STATE_FAILED : v1::JOB_STATE_SUCCEEDED), "fp")
            .ok());
  }
  auto page = (*store)->List(v1::JOB_STATE_UNSPECIFIED, v1::JOB_KIND_UNSPECIFIED, 0, 2);
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].job.id(), "j4");
  EXPECT_EQ((*page)[1].job.id(), "j3");
  auto next = (*store)->List(v1::JOB_STATE_UNSPECIFIED, v1::JOB_KIND_UNSPECIFIED, (*page)[1].seq, 10);
  ASSERT_EQ(next->size(), 3u);
  EXPECT_EQ((*next)[0].job.id(), "j2");
  auto failed = (*store)->List(v1::JOB_STATE_FAILED, v1::JOB_KIND_UNSPECIFIED, 0, 10);
  ASSERT_EQ(failed->size(), 2u);
  EXPECT_EQ((*failed)[0].job.id(), "j3");
  EXPECT_TRUE((*store)->List(v1::JOB_STATE_UNSPECIFIED, v1::JOB_KIND_CONVERT, 0, 10)->empty());
}

}  // namespace
}  // namespace modelsmith
