// --log-format json: every line of modelsmithd's log is one JSON object, with the job id on
// job events.
#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "nlohmann/json.hpp"
#include "tests/support/job_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

TEST(LoggingTest, JsonFormatGivesOneObjectPerLineWithJobIds) {
  TempDir dir;
  const std::string data = dir.path() + "/data";
  std::filesystem::create_directories(data);
  MakeCheckpoint(data + "/m.safetensors");
  ServerProcess server(data, {"--log-format", "json"});
  auto stub = Connect(server.address());
  v1::Job job;
  ASSERT_TRUE(Submit(*stub, ShardRequest(data + "/m.safetensors", data + "/out", "100KB"), &job).ok());
  WaitForEnd(*stub, job.id());
  EXPECT_EQ(server.Terminate(), 0);

  std::istringstream lines(server.Log());
  std::string line;
  int with_job_id = 0;
  int total = 0;
  while (std::getline(lines, line)) {
    nlohmann::json object = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(object.is_object()) << "not JSON: " << line;
    EXPECT_TRUE(object.contains("time") && object.contains("level") && object.contains("msg")) << line;
    if (object.value("job_id", "") == job.id()) ++with_job_id;
    ++total;
  }
  EXPECT_GE(with_job_id, 3) << server.Log();  // queued, running, succeeded
  EXPECT_GT(total, with_job_id);
}

}  // namespace
}  // namespace modelsmith::testing
