// Restart recovery and graceful drain, with the real modelsmithd killed and restarted.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/job_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

// Every file under `dir`, hidden (staging) files included.
std::vector<std::string> AllFiles(const std::string& dir) {
  std::vector<std::string> names;
  if (!fs::exists(dir)) return names;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) names.push_back(e.path().filename());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class RecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/data";
    fs::create_directories(data_);
    model_ = data_ + "/model.safetensors";
    // About 5 MB: at 1 MB/s a job runs for seconds, long enough to be killed mid-copy.
    MakeCheckpoint(model_, {"--hidden", "256", "--intermediate", "688", "--vocab", "1024", "--fast"});
  }

  // Starts a paced server, submits or waits for the job to be copying, then SIGKILLs it.
  void KillWhileRunning(const std::string& id) {
    ServerProcess server(data_, {"--job-io-limit", "1MB"});
    auto stub = Connect(server.address());
    WaitFor(*stub, id,
            [](const v1::Job& j) { return j.state() == v1::JOB_STATE_RUNNING && j.progress().bytes_done() > 0; });
    server.Kill();
  }

  // Submits the job to a paced server and SIGKILLs the server once the job is copying.
  std::string SubmitThenKillWhileRunning() {
    ServerProcess server(data_, {"--job-io-limit", "1MB"});
    auto stub = Connect(server.address());
    v1::Job job;
    EXPECT_TRUE(Submit(*stub, ShardRequest(model_, data_ + "/out", "1MB"), &job).ok());
    WaitFor(*stub, job.id(), [](const v1::Job& j) { return j.progress().bytes_done() > 0; });
    server.Kill();
    return job.id();
  }

  TempDir dir_;
  std::string data_;
  std::string model_;
};

TEST_F(RecoveryTest, JobKilledMidRunCompletesAfterRestartWithNoPartialFiles) {
  const std::string id = SubmitThenKillWhileRunning();
  // Staged files of the dead attempt may be there, but nothing is complete.
  EXPECT_FALSE(fs::exists(data_ + "/out/modelsmith.manifest.json"));

  ServerProcess server(data_);
  auto stub = Connect(server.address());
  v1::Job job = WaitForEnd(*stub, id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.error().message() << "\n" << server.Log();
  EXPECT_EQ(job.attempt(), 2u);
  bool warned = false;
  for (const v1::Warning& w : job.warnings()) warned = warned || w.code() == "JOB_INTERRUPTED";
  EXPECT_TRUE(warned);
  std::vector<std::string> files = AllFiles(data_ + "/out");
  for (const std::string& name : files) EXPECT_NE(name[0], '.') << "staging file left: " << name;
  EXPECT_EQ(files.size(), static_cast<size_t>(job.result().artifacts_size()));
  for (const v1::Artifact& a : job.result().artifacts()) EXPECT_EQ(fs::file_size(a.uri()), a.size_bytes());
}

TEST_F(RecoveryTest, ThirdInterruptionFailsTheJob) {
  const std::string id = SubmitThenKillWhileRunning();  // attempt 1
  KillWhileRunning(id);                                 // attempt 2
  KillWhileRunning(id);                                 // attempt 3
  ServerProcess server(data_);
  auto stub = Connect(server.address());
  v1::Job job = GetJob(*stub, id);
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(job.error().reason(), "INTERRUPTED");
  EXPECT_EQ(job.attempt(), 3u);
}

TEST_F(RecoveryTest, SigtermDrainsRefusesSubmitsAndExitsZero) {
  ServerProcess server(data_, {"--job-io-limit", "1MB", "--shutdown-grace", "1"});
  auto stub = Connect(server.address());
  v1::Job job;
  ASSERT_TRUE(Submit(*stub, ShardRequest(model_, data_ + "/out", "1MB"), &job).ok());
  WaitFor(*stub, job.id(), [](const v1::Job& j) { return j.progress().bytes_done() > 0; });

  std::thread terminate([&] { EXPECT_EQ(server.Terminate(), 0); });
  // During the grace period: NOT_SERVING, and submits are refused.
  auto health =
      grpc::health::v1::Health::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  bool saw_not_serving = false;
  bool saw_unavailable = false;
  for (int i = 0; i < 50 && !(saw_not_serving && saw_unavailable); ++i) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    if (health->Check(&context, request, &response).ok() &&
        response.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING) {
      saw_not_serving = true;
    }
    v1::Job refused;
    grpc::Status status = Submit(*stub, ShardRequest(model_, data_ + "/other", "1MB"), &refused);
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE && ErrorInfoOf(status).reason() == "SHUTTING_DOWN") {
      saw_unavailable = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  terminate.join();
  EXPECT_TRUE(saw_not_serving);
  EXPECT_TRUE(saw_unavailable);
  EXPECT_FALSE(fs::exists(data_ + "/out/modelsmith.manifest.json"));

  // The interrupted job runs again after a restart.
  ServerProcess restarted(data_);
  auto stub2 = Connect(restarted.address());
  v1::Job done = WaitForEnd(*stub2, job.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error().message();
  EXPECT_EQ(done.attempt(), 2u);
  for (const std::string& name : AllFiles(data_ + "/out")) EXPECT_NE(name[0], '.') << name;
}

}  // namespace
}  // namespace modelsmith::testing
