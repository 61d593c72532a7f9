// modelsmithd on PostgreSQL (started by the test on loopback): jobs are stored there and survive
// the server, the password stays out of the output, an unknown URL scheme refuses to start, and a
// second server on one SQLite file is refused (replicas share PostgreSQL: replicas_test.cc).
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/support/job_client.h"
#include "tests/support/postgres_server.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

class DatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(postgres_.started()) << postgres_.error();
    database_ = postgres_.NewDatabase("modelsmith");
    ASSERT_FALSE(database_.empty()) << postgres_.error();
    // Trust authentication ignores the password; it is here to be kept out of every message.
    with_password_ = "postgresql://modelsmith:s3cr3t-pw@127.0.0.1:" + std::to_string(postgres_.port()) + "/modelsmith";
    data_ = dir_.path() + "/data";
    std::filesystem::create_directories(data_);
    MakeCheckpoint(data_ + "/m.safetensors");
  }
  PostgresServer postgres_;
  TempDir dir_;
  std::string database_;
  std::string with_password_;
  std::string data_;
};

TEST_F(DatabaseTest, JobsLiveInPostgresAndOutliveTheServer) {
  std::string id;
  {
    ServerProcess server(data_, {"--database", with_password_});
    ASSERT_TRUE(server.started());
    auto stub = Connect(server.address());
    v1::Job job;
    ASSERT_TRUE(Submit(*stub, ShardRequest(data_ + "/m.safetensors", data_ + "/out", "100KB"), &job).ok());
    id = job.id();
    EXPECT_EQ(WaitForEnd(*stub, id).state(), v1::JOB_STATE_SUCCEEDED);
    EXPECT_EQ(server.Terminate(), 0);
    const std::string log = server.Log();
    EXPECT_EQ(log.find("s3cr3t-pw"), std::string::npos) << log;
    EXPECT_NE(log.find("modelsmith:***@127.0.0.1"), std::string::npos) << log;
  }
  EXPECT_FALSE(std::filesystem::exists(data_ + "/modelsmith.db")) << "the SQLite default was used";
  EXPECT_EQ(postgres_.Psql("modelsmith", "SELECT count(*) FROM jobs WHERE id = '" + id + "'"), "1\n");

  ServerProcess again(data_, {"--database", database_});
  ASSERT_TRUE(again.started());
  auto stub = Connect(again.address());
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_id(id);
  v1::Job stored;
  ASSERT_TRUE(stub->GetJob(&context, request, &stored).ok());
  EXPECT_EQ(stored.state(), v1::JOB_STATE_SUCCEEDED);
}

TEST_F(DatabaseTest, ASecondServerOnTheSameSqliteFileIsRefused) {
  ServerProcess first(data_, {});
  ASSERT_TRUE(first.started());
  CommandResult second =
      RunCommand({ServerBinary(), "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", data_});
  EXPECT_EQ(second.exit_code, 2);
  EXPECT_NE(second.err.find("another modelsmithd serves the job database"), std::string::npos) << second.err;
  EXPECT_NE(second.err.find("replicas share a PostgreSQL database"), std::string::npos) << second.err;
}

TEST_F(DatabaseTest, AnUnknownSchemeOrAnUnreachableServerRefusesToStart) {
  CommandResult scheme = RunCommand({ServerBinary(), "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir",
                                     data_, "--database", "mysql://root:pw@127.0.0.1/jobs"});
  EXPECT_EQ(scheme.exit_code, 2);
  EXPECT_NE(scheme.err.find("neither sqlite:PATH nor postgresql://"), std::string::npos) << scheme.err;
  CommandResult unreachable =
      RunCommand({ServerBinary(), "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", data_,
                  "--database", "postgresql://modelsmith:s3cr3t-pw@127.0.0.1:1/x?connect_timeout=5"});
  EXPECT_EQ(unreachable.exit_code, 1);
  EXPECT_NE(unreachable.err.find("cannot connect to the job database"), std::string::npos) << unreachable.err;
  EXPECT_EQ((unreachable.out + unreachable.err).find("s3cr3t-pw"), std::string::npos);
}

}  // namespace
}  // namespace modelsmith::testing
