// An independent client, buf curl (pinned in tests/package-lock.json), drives the server through
// server reflection alone, with no .proto files: what grpcurl users do in the README tour.
#include <gtest/gtest.h>

#include <filesystem>

#include "nlohmann/json.hpp"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

class ReflectionClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/data";
    std::filesystem::create_directories(data_);
    MakeCheckpoint(data_ + "/m.safetensors");
    server_ = std::make_unique<ServerProcess>(data_);
    ASSERT_TRUE(server_->started());
  }
  CommandResult Buf(std::vector<std::string> args) {
    std::vector<std::string> argv = {SourceDir() + "/tests/node_modules/.bin/buf", "curl", "--protocol", "grpc",
                                     "--http2-prior-knowledge"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }
  std::string Url(const std::string& method = "") {
    return "http://" + server_->address() + (method.empty() ? "" : "/" + method);
  }

  TempDir dir_;
  std::string data_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(ReflectionClientTest, ListsServicesAndMethods) {
  CommandResult services = Buf({"--list-services", Url()});
  ASSERT_EQ(services.exit_code, 0) << services.err;
  EXPECT_NE(services.out.find("modelsmith.v1.JobService"), std::string::npos);
  EXPECT_NE(services.out.find("grpc.health.v1.Health"), std::string::npos);
  CommandResult methods = Buf({"--list-methods", Url()});
  for (const char* m : {"SubmitJob", "GetJob", "ListJobs", "CancelJob", "WatchJob", "InspectModel"}) {
    EXPECT_NE(methods.out.find(std::string("modelsmith.v1.JobService/") + m), std::string::npos) << m;
  }
}

TEST_F(ReflectionClientTest, SubmitWatchGetWithJsonBodies) {
  const std::string body = R"({"spec":{"shard":{"input":")" + data_ + R"(/m.safetensors","output":")" + data_ +
                           R"(/out","max_shard_size":"100KB"}}})";
  CommandResult submit = Buf({"-d", body, Url("modelsmith.v1.JobService/SubmitJob")});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  const std::string id = nlohmann::json::parse(submit.out)["id"];

  CommandResult watch = Buf({"-d", R"({"id":")" + id + R"("})", Url("modelsmith.v1.JobService/WatchJob")});
  ASSERT_EQ(watch.exit_code, 0) << watch.err;
  EXPECT_NE(watch.out.find("JOB_STATE_SUCCEEDED"), std::string::npos) << watch.out;

  CommandResult get = Buf({"-d", R"({"id":")" + id + R"("})", Url("modelsmith.v1.JobService/GetJob")});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  nlohmann::json job = nlohmann::json::parse(get.out);
  EXPECT_EQ(job["state"], "JOB_STATE_SUCCEEDED");
  EXPECT_EQ(job["result"]["figures"]["shard"]["shardCount"], 3);

  CommandResult health = Buf({"-d", "{}", Url("grpc.health.v1.Health/Check")});
  EXPECT_NE(health.out.find("SERVING"), std::string::npos) << health.err;
}

TEST_F(ReflectionClientTest, ErrorsCarryCodeAndErrorInfo) {
  const std::string body = R"({"spec":{"shard":{"input":")" + data_ + R"(/m.safetensors","output":")" + data_ +
                           R"(/out","max_shard_size":"5 gigs"}}})";
  CommandResult submit = Buf({"-d", body, Url("modelsmith.v1.JobService/SubmitJob")});
  EXPECT_NE(submit.exit_code, 0);
  EXPECT_NE(submit.err.find("invalid_argument"), std::string::npos) << submit.err;
  EXPECT_NE(submit.err.find("google.rpc.ErrorInfo"), std::string::npos) << submit.err;
}

}  // namespace
}  // namespace modelsmith::testing
