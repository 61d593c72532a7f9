// JobService against the real modelsmithd on an ephemeral loopback port.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/support/job_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

class JobServiceTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> args = {}) {
    server_ = std::make_unique<ServerProcess>(data_, std::move(args));
    ASSERT_TRUE(server_->started());
    stub_ = Connect(server_->address());
  }
  void SetUp() override {
    data_ = dir_.path() + "/data";
    fs::create_directories(data_);
    model_ = data_ + "/tiny.safetensors";
    MakeCheckpoint(model_);
  }
  std::vector<std::string> Files(const std::string& path) {
    std::vector<std::string> names;
    if (!fs::exists(path)) return names;
    for (const auto& e : fs::recursive_directory_iterator(path)) {
      if (e.is_regular_file()) names.push_back(e.path().lexically_relative(path));
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  TempDir dir_;
  std::string data_;
  std::string model_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(JobServiceTest, SubmitWatchGetShardJob) {
  Start();
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, data_ + "/out", "100KB"), &job).ok());
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.kind(), v1::JOB_KIND_SHARD);
  EXPECT_GT(job.estimated_peak_bytes(), 0u);

  std::vector<v1::JobEvent> events = WatchAll(*stub_, job.id());
  ASSERT_GE(events.size(), 2u);
  EXPECT_TRUE(events.front().has_job());
  ASSERT_TRUE(events.back().has_job());
  const v1::Job& final_job = events.back().job();
  EXPECT_EQ(final_job.state(), v1::JOB_STATE_SUCCEEDED) << final_job.error().message();
  bool saw_succeeded_change = false;
  for (const v1::JobEvent& e : events) {
    if (e.has_state_change() && e.state_change().state() == v1::JOB_STATE_SUCCEEDED) saw_succeeded_change = true;
  }
  EXPECT_TRUE(saw_succeeded_change);

  v1::Job got = GetJob(*stub_, job.id());
  EXPECT_EQ(got.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(got.attempt(), 1u);
  EXPECT_TRUE(got.has_start_time() && got.has_end_time());
  ASSERT_EQ(got.result().figures().shard().shard_count(), 3u);
  EXPECT_EQ(got.result().artifacts_size(), 5);  // 3 shards, index, manifest
  for (const v1::Artifact& a : got.result().artifacts()) {
    EXPECT_EQ(fs::file_size(a.uri()), a.size_bytes()) << a.uri();
    EXPECT_EQ(a.sha256().size(), 64u);
  }
  EXPECT_GT(got.result().figures().peak_resident_bytes(), 0u);
  EXPECT_EQ(Files(data_ + "/out").size(), 5u);
}

TEST_F(JobServiceTest, InvalidSpecIsInvalidArgumentWithReasonAndField) {
  Start();
  v1::Job job;
  grpc::Status status = Submit(*stub_, ShardRequest(model_, data_ + "/out", "5 gigabytes"), &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  google::rpc::ErrorInfo info = ErrorInfoOf(status);
  EXPECT_EQ(info.reason(), "INVALID_SIZE");
  EXPECT_EQ(info.domain(), "modelsmith.dev");
  EXPECT_EQ(info.metadata().at("field"), "shard.max_shard_size");
  EXPECT_NE(status.error_message().find("5 gigabytes"), std::string::npos);
}

TEST_F(JobServiceTest, MalformedInputIsRefusedAtSubmitNamingTheFile) {
  Start();
  const std::string bad = data_ + "/bad.safetensors";
  { std::ofstream(bad) << std::string("\x10\0\0\0\0\0\0\0{\"a\":1}", 15); }
  v1::Job job;
  grpc::Status status = Submit(*stub_, ShardRequest(bad, data_ + "/out", "1GB"), &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorInfoOf(status).metadata().at("file"), bad);
}

TEST_F(JobServiceTest, MissingOnnxModelIsNotFoundNamingTheField) {
  Start();
  v1::SubmitJobRequest request;
  request.mutable_spec()->mutable_bisect()->set_input(data_ + "/model.onnx");
  request.mutable_spec()->mutable_bisect()->set_output(data_ + "/chunks");
  v1::Job job;
  grpc::Status status = Submit(*stub_, request, &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ErrorInfoOf(status).metadata().at("field"), "bisect.input");
}

TEST_F(JobServiceTest, PathsOutsideRootsArePermissionDenied) {
  Start();
  v1::Job job;
  grpc::Status status = Submit(*stub_, ShardRequest(model_, data_ + "/../escape", "1GB"), &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorInfoOf(status).reason(), "PATH_OUTSIDE_ROOTS");
  status = Submit(*stub_, ShardRequest("/etc/hostname", data_ + "/out", "1GB"), &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(JobServiceTest, MissingInputIsNotFoundAndOccupiedOutputIsFailedPrecondition) {
  Start();
  v1::Job job;
  EXPECT_EQ(Submit(*stub_, ShardRequest(data_ + "/absent.safetensors", data_ + "/out", "1GB"), &job).error_code(),
            grpc::StatusCode::NOT_FOUND);
  fs::create_directories(data_ + "/occupied");
  std::ofstream(data_ + "/occupied/keep.txt") << "mine";
  grpc::Status status = Submit(*stub_, ShardRequest(model_, data_ + "/occupied", "1GB"), &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ErrorInfoOf(status).reason(), "OUTPUT_NOT_EMPTY");
}

TEST_F(JobServiceTest, RequestIdMakesSubmitIdempotent) {
  Start();
  v1::Job first, second, third;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, data_ + "/out", "1GB", "req-1"), &first).ok());
  ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, data_ + "/out", "1GB", "req-1"), &second).ok());
  EXPECT_EQ(first.id(), second.id());
  grpc::Status status = Submit(*stub_, ShardRequest(model_, data_ + "/out", "2GB", "req-1"), &third);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ErrorInfoOf(status).reason(), "REQUEST_ID_REUSED");
  WaitForEnd(*stub_, first.id());
}

TEST_F(JobServiceTest, ListJobsPagesNewestFirstAndFilters) {
  Start();
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    v1::Job job;
    ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, data_ + "/out" + std::to_string(i), "0"), &job).ok());
    ids.push_back(job.id());
  }
  for (const std::string& id : ids) WaitForEnd(*stub_, id);

  std::vector<std::string> listed;
  v1::ListJobsRequest request;
  request.set_page_size(2);
  int pages = 0;
  do {
    grpc::ClientContext context;
    v1::ListJobsResponse response;
    ASSERT_TRUE(stub_->ListJobs(&context, request, &response).ok());
    EXPECT_LE(response.jobs_size(), 2);
    for (const v1::Job& job : response.jobs()) listed.push_back(job.id());
    request.set_page_token(response.next_page_token());
    ++pages;
  } while (!request.page_token().empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(listed, std::vector<std::string>(ids.rbegin(), ids.rend()));

  grpc::ClientContext context;
  v1::ListJobsRequest failed;
  failed.set_state(v1::JOB_STATE_FAILED);
  v1::ListJobsResponse response;
  ASSERT_TRUE(stub_->ListJobs(&context, failed, &response).ok());
  EXPECT_EQ(response.jobs_size(), 0);

  grpc::ClientContext negative_context;
  v1::ListJobsRequest negative;
  negative.set_page_size(-1);
  EXPECT_EQ(stub_->ListJobs(&negative_context, negative, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext token_context;
  v1::ListJobsRequest bad_token;
  bad_token.set_page_token("garbage");
  EXPECT_EQ(stub_->ListJobs(&token_context, bad_token, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(JobServiceTest, CancelQueuedAtOnceAndRunningPromptly) {
  // One worker and a paced job: the first runs for seconds, the second waits in the queue.
  MakeCheckpoint(data_ + "/big.safetensors", {"--hidden", "256", "--intermediate", "688", "--fast"});
  Start({"--workers", "1", "--job-io-limit", "1MB"});
  v1::Job running, queued;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(data_ + "/big.safetensors", data_ + "/out-a", "500KB"), &running).ok());
  ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, data_ + "/out-b", "100KB"), &queued).ok());
  WaitFor(*stub_, running.id(), [](const v1::Job& j) { return j.progress().bytes_done() > 0; });

  grpc::ClientContext c1;
  v1::CancelJobRequest cancel;
  cancel.set_id(queued.id());
  v1::Job after;
  ASSERT_TRUE(stub_->CancelJob(&c1, cancel, &after).ok());
  EXPECT_EQ(after.state(), v1::JOB_STATE_CANCELLED);

  const auto start = std::chrono::steady_clock::now();
  grpc::ClientContext c2;
  cancel.set_id(running.id());
  ASSERT_TRUE(stub_->CancelJob(&c2, cancel, &after).ok());
  v1::Job ended = WaitForEnd(*stub_, running.id());
  EXPECT_EQ(ended.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_EQ(ended.error().reason(), "CANCELLED");
  EXPECT_TRUE(Files(data_ + "/out-a").empty()) << "a cancelled job left files";
  EXPECT_TRUE(Files(data_ + "/out-b").empty());

  grpc::ClientContext c3;
  grpc::Status again = stub_->CancelJob(&c3, cancel, &after);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ErrorInfoOf(again).reason(), "JOB_ALREADY_ENDED");
}

TEST_F(JobServiceTest, ManyWatchersAllSeeEveryStateChange) {
  MakeCheckpoint(data_ + "/big.safetensors", {"--hidden", "256", "--intermediate", "688", "--fast"});
  Start({"--job-io-limit", "4MB"});
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(data_ + "/big.safetensors", data_ + "/out", "500KB"), &job).ok());
  std::vector<std::vector<v1::JobEvent>> streams(4);
  std::vector<std::thread> watchers;
  for (auto& stream : streams) {
    watchers.emplace_back([&] { stream = WatchAll(*stub_, job.id()); });
  }
  for (auto& t : watchers) t.join();
  for (const auto& events : streams) {
    ASSERT_FALSE(events.empty());
    EXPECT_TRUE(events.front().has_job());
    EXPECT_EQ(events.back().job().state(), v1::JOB_STATE_SUCCEEDED);
    std::vector<v1::JobState> changes;
    int progress = 0;
    for (const v1::JobEvent& e : events) {
      if (e.has_state_change()) changes.push_back(e.state_change().state());
      if (e.has_progress()) ++progress;
    }
    ASSERT_FALSE(changes.empty());
    EXPECT_EQ(changes.back(), v1::JOB_STATE_SUCCEEDED);
    EXPECT_GT(progress, 0);
  }
}

TEST_F(JobServiceTest, WatchOfFinishedJobSendsItAndEnds) {
  Start();
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, data_ + "/out", "0"), &job).ok());
  WaitForEnd(*stub_, job.id());
  std::vector<v1::JobEvent> events = WatchAll(*stub_, job.id());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].job().state(), v1::JOB_STATE_SUCCEEDED);
  grpc::Status status;
  WatchAll(*stub_, "job-unknown", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(JobServiceTest, InspectModelDescribesShardedCheckpoint) {
  Start();
  MakeCheckpoint(data_ + "/sharded", {"--shards", "3"});
  v1::ModelInfo info;
  ASSERT_TRUE(Inspect(*stub_, data_ + "/sharded", &info).ok());
  EXPECT_EQ(info.format(), "safetensors-sharded");
  EXPECT_GE(info.files_size(), 3);
  EXPECT_EQ(info.tensor_count(), 21u);
  EXPECT_EQ(info.tensors(0).name(), "model.embed_tokens.weight");
  EXPECT_EQ(info.tensors(0).dtype(), "F16");
  EXPECT_EQ(info.tensors(0).shape(0), 256u);
  EXPECT_EQ(info.metadata().at("format"), "pt");
  uint64_t total = 0;
  for (const auto& t : info.tensors()) total += t.size_bytes();
  EXPECT_EQ(info.total_bytes(), total);
}

TEST_F(JobServiceTest, HealthIsServingAndReflectionListsServices) {
  Start();
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  for (const char* service : {"", "modelsmith.v1.JobService"}) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    ASSERT_TRUE(health->Check(&context, request, &response).ok());
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext context;
  auto stream = reflection->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest list;
  list.set_list_services("");
  ASSERT_TRUE(stream->Write(list));
  grpc::reflection::v1alpha::ServerReflectionRequest describe;
  describe.set_file_containing_symbol("modelsmith.v1.ShardSpec");
  ASSERT_TRUE(stream->Write(describe));
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::set<std::string> services;
  for (const auto& s : response.list_services_response().service()) services.insert(s.name());
  EXPECT_TRUE(services.contains("modelsmith.v1.JobService"));
  EXPECT_TRUE(services.contains("grpc.health.v1.Health"));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_GT(response.file_descriptor_response().file_descriptor_proto_size(), 0);
  stream->Finish();
}

}  // namespace
}  // namespace modelsmith::testing
