// Shard and convert jobs with S3 inputs and outputs, through the real modelsmithd and the CLI, against a real
// S3-compatible server; artifacts are read back with boto3, an independent client.
#include <gtest/gtest.h>

#include <algorithm>

#include <filesystem>
#include <thread>

#include "nlohmann/json.hpp"
#include "tests/support/job_client.h"
#include "tests/support/s3_server.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "workers/storage/s3_object_store.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

class S3JobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/data";
    fs::create_directories(data_);
    fs::create_directories(dir_.path() + "/s3");
    s3_ = std::make_unique<S3Server>(dir_.path() + "/s3");
    ASSERT_TRUE(s3_->running());
    store_ = std::make_unique<S3ObjectStore>(s3_->Config(), nullptr);
    model_ = data_ + "/m.safetensors";
    MakeCheckpoint(model_);
  }
  void StartServer(std::vector<std::string> args = {}) {
    args.insert(args.end(), {"--s3-part-size", "5MiB"});
    // The bucket is reachable only as an S3 root; the data directory stays the local root.
    if (std::find(args.begin(), args.end(), "--roots") == args.end()) {
      args.insert(args.end(), {"--roots", data_ + "," + std::string("s3://") + kS3Bucket});
    }
    server_ = std::make_unique<ServerProcess>(data_, args, /*with_metrics=*/true, s3_->Environment());
    ASSERT_TRUE(server_->started());
    stub_ = Connect(server_->address());
  }
  std::string Uri(const std::string& prefix) { return std::string("s3://") + kS3Bucket + "/" + prefix; }
  std::vector<ObjectEntry> Objects(const std::string& prefix) {
    auto entries = store_->List(Uri(prefix));
    EXPECT_TRUE(entries.ok()) << entries.status();
    return entries.value_or(std::vector<ObjectEntry>{});
  }
  // Tensor count and bytes of the model at `uri`, as the server inspects it.
  std::pair<uint64_t, uint64_t> InspectTotal(const std::string& uri) {
    v1::ModelInfo info;
    grpc::Status status = Inspect(*stub_, uri, &info);
    EXPECT_TRUE(status.ok()) << uri << ": " << status.error_message();
    return {info.tensor_count(), info.total_bytes()};
  }
  nlohmann::json ReadBackWithBoto3(const std::string& prefix) {
    std::vector<std::string> argv = {"env"};
    for (const std::string& e : s3_->Environment()) argv.push_back(e);
    argv.insert(argv.end(),
                {"python3", SourceDir() + "/tests/tools/s3_readback.py", s3_->endpoint(), kS3Bucket, prefix});
    CommandResult result = RunCommand(argv);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return nlohmann::json::parse(result.out, nullptr, false);
  }

  TempDir dir_;
  std::string data_;
  std::string model_;
  std::unique_ptr<S3Server> s3_;
  std::unique_ptr<S3ObjectStore> store_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

TEST_F(S3JobTest, LocalToS3ShardsAreReadBackByBoto3MatchingTheManifest) {
  StartServer();
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, Uri("run1"), "100KB"), &job).ok());
  v1::Job done = WaitForEnd(*stub_, job.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error().message() << server_->Log();

  nlohmann::json readback = ReadBackWithBoto3("run1");
  ASSERT_TRUE(readback.is_object());
  const nlohmann::json& objects = readback["objects"];
  EXPECT_EQ(objects.size(), 5u);  // 3 shards, index, manifest
  ASSERT_TRUE(readback["manifest"].is_object());
  for (const auto& artifact : readback["manifest"]["artifacts"]) {
    const std::string name = artifact["name"];
    ASSERT_TRUE(objects.contains(name)) << name;
    EXPECT_EQ(objects[name]["size"], artifact["size_bytes"]) << name;
    EXPECT_EQ(objects[name]["sha256"], artifact["sha256"]) << name;
    EXPECT_EQ(artifact["uri"], Uri("run1/" + name));
  }
  // The job's own result agrees with what S3 holds.
  for (const v1::Artifact& a : done.result().artifacts()) {
    const std::string name = a.uri().substr(a.uri().rfind('/') + 1);
    EXPECT_EQ(objects[name]["sha256"], a.sha256()) << name;
  }
}

TEST_F(S3JobTest, ConvertToS3IsVerifiedAfterCommitAndEqualsTheLocalResult) {
  fs::copy_file(SourceDir() + "/tests/data/torch/state_dict.bin", data_ + "/pytorch_model.bin");
  StartServer();
  auto convert = [&](const std::string& output) {
    v1::SubmitJobRequest request;
    v1::ConvertSpec* spec = request.mutable_spec()->mutable_convert();
    spec->set_input(data_ + "/pytorch_model.bin");
    spec->set_output(output);
    spec->set_target_format(v1::TARGET_FORMAT_SAFETENSORS);
    spec->set_dtype("bf16");
    v1::Job job;
    EXPECT_TRUE(Submit(*stub_, request, &job).ok());
    return WaitForEnd(*stub_, job.id());
  };
  // S3 cannot be read before the upload completes, so the committed object's tensors are
  // compared with the source after commit; the bytes are the same as a local conversion's.
  const v1::Job remote = convert(Uri("converted"));
  ASSERT_EQ(remote.state(), v1::JOB_STATE_SUCCEEDED) << remote.error().message() << server_->Log();
  const v1::Job local = convert(data_ + "/converted");
  ASSERT_EQ(local.state(), v1::JOB_STATE_SUCCEEDED) << local.error().message();
  nlohmann::json readback = ReadBackWithBoto3("converted");
  ASSERT_TRUE(readback.is_object());
  EXPECT_EQ(readback["objects"]["model.safetensors"]["sha256"], local.result().artifacts(0).sha256());
  EXPECT_EQ(remote.result().artifacts(0).sha256(), local.result().artifacts(0).sha256());
}

TEST_F(S3JobTest, S3UrisOutsideTheS3RootsAreRefused) {
  StartServer({"--roots", data_ + ",s3://" + kS3Bucket + "/allowed"});
  v1::Job job;
  // Inside the S3 root: accepted and written.
  ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, Uri("allowed/run"), "100KB"), &job).ok());
  EXPECT_EQ(WaitForEnd(*stub_, job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  // Another prefix of the same bucket, a prefix that merely starts the same, another bucket.
  for (const std::string& uri : {Uri("other/run"), Uri("allowed-not/run"), std::string("s3://elsewhere/run")}) {
    grpc::Status status = Submit(*stub_, ShardRequest(model_, uri, "100KB"), &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << uri;
    EXPECT_EQ(ErrorInfoOf(status).reason(), "PATH_OUTSIDE_ROOTS") << uri;
    v1::ModelInfo info;
    EXPECT_EQ(Inspect(*stub_, uri, &info).error_code(), grpc::StatusCode::PERMISSION_DENIED) << uri;
  }
  // ".." never crosses out of a prefix or a bucket.
  for (const std::string& uri : {Uri("allowed/../other/run"), std::string("s3://elsewhere/../artifacts/allowed/x")}) {
    grpc::Status status = Submit(*stub_, ShardRequest(model_, uri, "100KB"), &job);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << uri;
  }
  EXPECT_TRUE(Objects("other").empty());
}

TEST_F(S3JobTest, WithoutAnS3RootNoBucketIsReachable) {
  StartServer({"--roots", data_});
  v1::Job job;
  grpc::Status status = Submit(*stub_, ShardRequest(model_, Uri("run"), "100KB"), &job);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorInfoOf(status).reason(), "PATH_OUTSIDE_ROOTS");
  EXPECT_NE(status.error_message().find("no S3 root"), std::string::npos) << status.error_message();
}

TEST_F(S3JobTest, S3ToS3ReshardAndInspectOnS3) {
  StartServer();
  v1::Job first, second;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, Uri("stage1"), "60KB"), &first).ok());
  ASSERT_EQ(WaitForEnd(*stub_, first.id()).state(), v1::JOB_STATE_SUCCEEDED);

  v1::ModelInfo info;
  ASSERT_TRUE(Inspect(*stub_, Uri("stage1"), &info).ok());
  EXPECT_EQ(info.format(), "safetensors-sharded");
  EXPECT_EQ(info.tensor_count(), 21u);

  ASSERT_TRUE(Submit(*stub_, ShardRequest(Uri("stage1"), Uri("stage2"), "0"), &second).ok());
  v1::Job done = WaitForEnd(*stub_, second.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error().message();
  std::vector<ObjectEntry> objects = Objects("stage2");
  ASSERT_EQ(objects.size(), 2u);
  EXPECT_EQ(objects[0].relative_name, "model.safetensors");
  EXPECT_EQ(InspectTotal(Uri("stage2")), InspectTotal(model_));

  // Metrics saw the S3 traffic.
  CommandResult scrape =
      RunCommand({"curl", "-s", "http://127.0.0.1:" + std::to_string(server_->metrics_port()) + "/metrics"});
  EXPECT_NE(scrape.out.find(R"(modelsmith_object_store_requests_total{code="200",op="put",store="s3"})"),
            std::string::npos);
  EXPECT_NE(scrape.out.find("modelsmith_object_store_request_duration_seconds_bucket"), std::string::npos);
  EXPECT_NE(scrape.out.find(R"(modelsmith_object_store_received_bytes_total{store="s3"})"), std::string::npos);
}

// A diffusers pipeline written to S3 (one job per component, staged under the output prefix,
// published whole) and read back from it.
TEST_F(S3JobTest, APipelineToS3AndBack) {
  const std::string sd = data_ + "/sd";
  ASSERT_EQ(
      RunCommand({"/usr/bin/python3", SourceDir() + "/tests/tools/make_diffusers_pipeline.py", sd, "--kind", "sd"})
          .exit_code,
      0);
  StartServer();
  v1::SubmitJobRequest to_s3;
  v1::ConvertSpec* convert = to_s3.mutable_spec()->mutable_convert();
  convert->set_input(sd);
  convert->set_output(Uri("sd-fp16"));
  convert->set_target_format(v1::TARGET_FORMAT_SAFETENSORS);
  convert->set_dtype("f16");
  convert->set_variant("fp16");
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, to_s3, &job).ok());
  v1::Job done = WaitForEnd(*stub_, job.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error().message();
  std::vector<std::string> names;
  for (const ObjectEntry& e : Objects("sd-fp16")) names.push_back(e.relative_name);
  for (const char* name :
       {"model_index.json", "modelsmith.manifest.json", "unet/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.fp16.safetensors", "scheduler/scheduler_config.json", "tokenizer/vocab.json"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
  for (const std::string& name : names) EXPECT_EQ(name.find(".modelsmith-pipeline"), std::string::npos) << name;
  EXPECT_EQ(names.size(), 13u);
  v1::ModelInfo info;
  ASSERT_TRUE(Inspect(*stub_, Uri("sd-fp16"), &info).ok());
  EXPECT_EQ(info.format(), "diffusers-pipeline");
  ASSERT_EQ(info.components_size(), 5);
  EXPECT_EQ(info.components(0).name(), "unet");
  EXPECT_EQ(info.components(0).dtypes(0), "F16");

  v1::SubmitJobRequest back;
  v1::ShardSpec* shard = back.mutable_spec()->mutable_shard();
  shard->set_input(Uri("sd-fp16"));
  shard->set_output(data_ + "/back");
  shard->set_max_shard_size("hf_default");
  shard->set_variant("fp16");
  ASSERT_TRUE(Submit(*stub_, back, &job).ok());
  done = WaitForEnd(*stub_, job.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error().message();
  EXPECT_TRUE(fs::exists(data_ + "/back/unet/diffusion_pytorch_model.fp16.safetensors"));
  EXPECT_EQ(RunCommand({"cmp", sd + "/model_index.json", data_ + "/back/model_index.json"}).exit_code, 0);
  // The components' outputs were moved into place inside S3 (CopyObject), not downloaded and
  // uploaded again.
  CommandResult scrape =
      RunCommand({"curl", "-s", "http://127.0.0.1:" + std::to_string(server_->metrics_port()) + "/metrics"});
  EXPECT_NE(scrape.out.find(R"(modelsmith_object_store_requests_total{code="200",op="copy",store="s3"})"),
            std::string::npos)
      << scrape.out.substr(0, 2000);
  EXPECT_EQ(RunCommand({"cmp", sd + "/tokenizer/merges.txt", data_ + "/back/tokenizer/merges.txt"}).exit_code, 0);
}

TEST_F(S3JobTest, CancelDuringMultipartUploadLeavesNoObject) {
  MakeCheckpoint(data_ + "/big.safetensors",
                 {"--hidden", "512", "--intermediate", "1376", "--vocab", "2048", "--fast"});
  StartServer({"--job-io-limit", "4MB"});
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(data_ + "/big.safetensors", Uri("cancelled"), "0"), &job).ok());
  EXPECT_EQ(CancelOnceUnderWay(*stub_, job.id(), 6 << 20), v1::JOB_STATE_CANCELLED);
  EXPECT_TRUE(Objects("cancelled").empty());
}

TEST_F(S3JobTest, S3OutageDuringUploadIsRetriedOrFailsCleanly) {
  MakeCheckpoint(data_ + "/big.safetensors",
                 {"--hidden", "512", "--intermediate", "1376", "--vocab", "2048", "--fast"});
  StartServer({"--job-io-limit", "6MB", "--s3-max-attempts", "40"});
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(data_ + "/big.safetensors", Uri("outage"), "8MB"), &job).ok());
  WaitFor(*stub_, job.id(), [](const v1::Job& j) { return j.progress().bytes_done() > (4 << 20); });
  s3_->Kill();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  s3_->Restart();
  ASSERT_TRUE(s3_->running());
  v1::Job done = WaitForEnd(*stub_, job.id());
  std::vector<ObjectEntry> objects = Objects("outage");
  if (done.state() == v1::JOB_STATE_SUCCEEDED) {
    EXPECT_EQ(objects.size(), static_cast<size_t>(done.result().artifacts_size()));
  } else {
    EXPECT_EQ(done.state(), v1::JOB_STATE_FAILED);
    EXPECT_TRUE(objects.empty()) << "a failed job left " << objects.size() << " objects";
  }
  CommandResult scrape =
      RunCommand({"curl", "-s", "http://127.0.0.1:" + std::to_string(server_->metrics_port()) + "/metrics"});
  EXPECT_NE(scrape.out.find("modelsmith_object_store_retries_total{"), std::string::npos) << "no retry was counted";
}

TEST_F(S3JobTest, CliRunReadsFromS3WithTheAwsEnvironment) {
  StartServer();
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, ShardRequest(model_, Uri("src"), "100KB"), &job).ok());
  ASSERT_EQ(WaitForEnd(*stub_, job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  std::vector<std::string> argv = {"env"};
  for (const std::string& e : s3_->Environment()) argv.push_back(e);
  argv.insert(argv.end(), {CliBinary(), "run", "--spec", "-"});
  CommandResult run = RunCommand(
      argv, R"({"shard":{"input":")" + Uri("src") + R"(","output":")" + data_ + R"(/from-s3","max_shard_size":"0"}})");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(InspectTotal(data_ + "/from-s3"), InspectTotal(model_));

  CommandResult no_credentials =
      RunCommand({CliBinary(), "run", "--spec", "-"}, R"({"shard":{"input":")" + Uri("src") + R"(","output":")" +
                                                          data_ + R"(/nope","max_shard_size":"0"}})");
  EXPECT_EQ(no_credentials.exit_code, 2);
  EXPECT_NE(no_credentials.err.find("S3_NOT_CONFIGURED"), std::string::npos) << no_credentials.err;
}

}  // namespace
}  // namespace modelsmith::testing
