// The modelsmith CLI against the real server, and `modelsmith run` without one.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/data";
    fs::create_directories(data_);
    model_ = data_ + "/m.safetensors";
    MakeCheckpoint(model_);
  }
  CommandResult Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    std::vector<std::string> argv = {CliBinary()};
    if (server_) argv.insert(argv.end(), {"--server", server_->address()});
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, stdin_text);
  }

  TempDir dir_;
  std::string data_;
  std::string model_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(CliTest, SubmitWatchGetListInspect) {
  server_ = std::make_unique<ServerProcess>(data_);
  CommandResult submit = Cli({"submit", "shard", "--input", model_, "--output", data_ + "/out", "--max-shard-size",
                              "100KB", "--strategy", "balanced", "--watch"});
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  EXPECT_NE(submit.out.find("state SUCCEEDED"), std::string::npos) << submit.out;
  EXPECT_NE(submit.out.find("model-00001-of-00003.safetensors"), std::string::npos) << submit.out;

  CommandResult list = Cli({"--json", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  nlohmann::json listed = nlohmann::json::parse(list.out);
  ASSERT_EQ(listed["jobs"].size(), 1u);
  const std::string id = listed["jobs"][0]["id"];
  EXPECT_EQ(listed["jobs"][0]["state"], "JOB_STATE_SUCCEEDED");

  CommandResult get = Cli({"--json", "get", id});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(nlohmann::json::parse(get.out)["result"]["figures"]["shard"]["shard_count"], 3);

  CommandResult watch = Cli({"watch", id});
  EXPECT_EQ(watch.exit_code, 0);

  CommandResult inspect = Cli({"inspect", data_ + "/out"});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_NE(inspect.out.find("safetensors-sharded"), std::string::npos);

  CommandResult cancel = Cli({"cancel", id});
  EXPECT_EQ(cancel.exit_code, 2);
  EXPECT_NE(cancel.err.find("JOB_ALREADY_ENDED"), std::string::npos) << cancel.err;
}

TEST_F(CliTest, SubmitExitCodesDistinguishInvalidInputFromSuccess) {
  server_ = std::make_unique<ServerProcess>(data_);
  CommandResult bad_size =
      Cli({"submit", "shard", "--input", model_, "--output", data_ + "/out", "--max-shard-size", "5 gigs", "--watch"});
  EXPECT_EQ(bad_size.exit_code, 2);
  EXPECT_NE(bad_size.err.find("INVALID_SIZE"), std::string::npos) << bad_size.err;
  CommandResult missing = Cli({"submit", "shard", "--input", data_ + "/nope.safetensors", "--output", data_ + "/out",
                               "--max-shard-size", "1GB", "--watch"});
  EXPECT_EQ(missing.exit_code, 2);
  CommandResult no_server = RunCommand({CliBinary(), "--server", "127.0.0.1:1", "get", "job-x"});
  EXPECT_EQ(no_server.exit_code, 1);
}

TEST_F(CliTest, RunExecutesOneJobWithoutAServer) {
  const std::string spec = R"({"shard": {"input": ")" + model_ + R"(", "output": ")" + data_ +
                           R"(/run-out", "max_shard_size": "100KB", "variant": "fp16"}})";
  CommandResult run = RunCommand({CliBinary(), "--json", "run", "--spec", "-"}, spec);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json result = nlohmann::json::parse(run.out);
  EXPECT_EQ(result["figures"]["shard"]["shard_count"], 3);
  EXPECT_TRUE(fs::exists(data_ + "/run-out/model.safetensors.index.fp16.json"));
  EXPECT_TRUE(fs::exists(data_ + "/run-out/model.fp16-00002-of-00003.safetensors"));
  EXPECT_TRUE(fs::exists(data_ + "/run-out/modelsmith.manifest.json"));

  // The same output again: occupied, so invalid input (2), and nothing is touched.
  CommandResult again = RunCommand({CliBinary(), "run", "--spec", "-"}, spec);
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("OUTPUT_NOT_EMPTY"), std::string::npos) << again.err;

  CommandResult not_json = RunCommand({CliBinary(), "run", "--spec", "-"}, "{nope");
  EXPECT_EQ(not_json.exit_code, 2);
  CommandResult incomplete = RunCommand({CliBinary(), "run", "--spec", "-"}, R"({"bisect": {"input": "x"}})");
  EXPECT_EQ(incomplete.exit_code, 2);
  EXPECT_NE(incomplete.err.find("bisect.output"), std::string::npos) << incomplete.err;

  const std::string spec_file = dir_.path() + "/job.json";
  std::ofstream(spec_file) << R"({"shard": {"input": ")" + model_ + R"(", "output": ")" + data_ +
                                  R"(/single", "maxShardSize": "0"}})";
  CommandResult from_file = RunCommand({CliBinary(), "run", "--spec", spec_file});
  EXPECT_EQ(from_file.exit_code, 0) << from_file.err;
  EXPECT_TRUE(fs::exists(data_ + "/single/model.safetensors"));
}

}  // namespace
}  // namespace modelsmith::testing
