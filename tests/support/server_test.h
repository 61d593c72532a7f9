// A test fixture with a data directory, a real modelsmithd started on demand on it, a gRPC stub,
// and the CLI pointed at that server.
#ifndef MODELSMITH_TESTS_SUPPORT_SERVER_TEST_H_
#define MODELSMITH_TESTS_SUPPORT_SERVER_TEST_H_

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/job_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/data";
    std::filesystem::create_directories(data_);
  }
  // Starts modelsmithd on data_ with extra flags, and connects stub_.
  void Start(std::vector<std::string> args = {}) {
    server_ = std::make_unique<ServerProcess>(data_, std::move(args));
    ASSERT_TRUE(server_->started());
    stub_ = Connect(server_->address());
  }
  // `modelsmith --server <address> ARGS...`.
  CommandResult Cli(std::vector<std::string> args) {
    std::vector<std::string> argv = {CliBinary(), "--server", server_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }

  // A cancelled or failed job leaves nothing: `dir` is absent or empty.
  static void ExpectNothingLeftIn(const std::string& dir) {
    if (!std::filesystem::exists(dir)) return;
    for (const auto& e : std::filesystem::directory_iterator(dir)) ADD_FAILURE() << "left behind: " << e.path();
  }

  TempDir dir_;
  std::string data_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::JobService::Stub> stub_;
};

}  // namespace modelsmith::testing

#endif  // MODELSMITH_TESTS_SUPPORT_SERVER_TEST_H_
