// Roots that cannot be escaped, against the real modelsmithd: a shard named by an index that is a
// symlink out of the root, and an input replaced by such a symlink after its job was accepted.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/support/job_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

class RootsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/data";
    outside_ = dir_.path() + "/outside";
    fs::create_directories(data_);
    fs::create_directories(outside_);
  }
  void Start(std::vector<std::string> args = {}) {
    server_ = std::make_unique<ServerProcess>(data_, std::move(args));
    ASSERT_TRUE(server_->started());
    stub_ = Connect(server_->address());
  }
  TempDir dir_;
  std::string data_;
  std::string outside_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(RootsTest, AShardNamedByTheIndexThatLeadsOutsideIsRefused) {
  MakeCheckpoint(data_ + "/model", {"--shards", "2"});
  const std::string shard = data_ + "/model/model-00002-of-00003.safetensors";  // the script makes 3
  ASSERT_TRUE(fs::exists(shard));
  fs::rename(shard, outside_ + "/stolen.safetensors");
  fs::create_symlink(outside_ + "/stolen.safetensors", shard);
  Start();
  v1::Job job;
  grpc::Status status = Submit(*stub_, ShardRequest(data_ + "/model", data_ + "/out", "100KB"), &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();
  EXPECT_EQ(ErrorInfoOf(status).reason(), "PATH_OUTSIDE_ROOTS");
  v1::ModelInfo info;
  EXPECT_EQ(Inspect(*stub_, data_ + "/model", &info).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_FALSE(fs::exists(data_ + "/out"));
}

TEST_F(RootsTest, AnInputSwappedForASymlinkAfterSubmitIsRefusedWhenTheJobRuns) {
  MakeCheckpoint(data_ + "/first.safetensors");
  MakeCheckpoint(data_ + "/second.safetensors");
  fs::copy_file(data_ + "/second.safetensors", outside_ + "/secret.safetensors");
  // One worker, paced: the second job waits in the queue while its input is swapped.
  Start({"--workers", "1", "--job-io-limit", "100KB"});
  v1::Job first, second;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(data_ + "/first.safetensors", data_ + "/out1", "100KB"), &first).ok());
  ASSERT_TRUE(Submit(*stub_, ShardRequest(data_ + "/second.safetensors", data_ + "/out2", "100KB"), &second).ok());
  ASSERT_EQ(GetJob(*stub_, second.id()).state(), v1::JOB_STATE_QUEUED);
  fs::remove(data_ + "/second.safetensors");
  fs::create_symlink(outside_ + "/secret.safetensors", data_ + "/second.safetensors");

  const v1::Job ended = WaitForEnd(*stub_, second.id());
  EXPECT_EQ(ended.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(ended.error().reason(), "PATH_OUTSIDE_ROOTS") << ended.error().message();
  EXPECT_TRUE(!fs::exists(data_ + "/out2") || fs::is_empty(data_ + "/out2"));
  WaitForEnd(*stub_, first.id());
}

}  // namespace
}  // namespace modelsmith::testing
