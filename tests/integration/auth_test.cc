// Identities and roles against the real modelsmithd: bearer tokens from an auth file of SHA-256
// hashes, each role allowed and refused through the CLI and through buf curl, the owner recorded,
// token rotation by rewriting the file, the per-principal quota and the audit lines.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/support/job_client.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

std::string Sha256Of(const std::string& token) {
  CommandResult r = RunCommand({"sh", "-c", "printf %s \"$0\" | sha256sum | cut -d' ' -f1", token});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out.substr(0, 64);
}

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/data";
    fs::create_directories(data_);
    model_ = data_ + "/m.safetensors";
    MakeCheckpoint(model_);
    auth_file_ = dir_.path() + "/auth";
    WriteAuth({{"reader", "rita", "rita-token"},
               {"submitter", "alice", "alice-token"},
               {"submitter", "bob", "bob-token"},
               {"admin", "ops", "ops-token"}});
  }
  struct Rule {
    std::string role, principal, token;
  };
  void WriteAuth(const std::vector<Rule>& rules) {
    std::ofstream out(auth_file_ + ".new");
    out << "# role principal sha256:hex\n";
    for (const Rule& r : rules) out << r.role << " " << r.principal << " sha256:" << Sha256Of(r.token) << "\n";
    out.close();
    fs::rename(auth_file_ + ".new", auth_file_);
  }
  void Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--auth-file", auth_file_};
    args.insert(args.end(), extra.begin(), extra.end());
    server_ = std::make_unique<ServerProcess>(data_, args);
    ASSERT_TRUE(server_->started());
  }
  CommandResult Cli(const std::string& token, std::vector<std::string> args) {
    std::vector<std::string> argv = {"env"};
    if (!token.empty()) argv.push_back("MODELSMITH_TOKEN=" + token);
    argv.insert(argv.end(), {CliBinary(), "--server", server_->address()});
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv);
  }
  // buf curl learns the schema by reflection, which needs a reader: it reflects with
  // `reflect_token` (the call's own token when empty) and calls with `token`.
  CommandResult Buf(const std::string& token, const std::string& method, const std::string& body,
                    const std::string& reflect_token = "") {
    std::vector<std::string> argv = {SourceDir() + "/tests/node_modules/.bin/buf",
                                     "curl",
                                     "--protocol",
                                     "grpc",
                                     "--http2-prior-knowledge",
                                     "-d",
                                     body};
    if (!token.empty()) argv.insert(argv.end(), {"-H", "authorization: Bearer " + token});
    const std::string reflecting = reflect_token.empty() ? token : reflect_token;
    if (!reflecting.empty()) argv.insert(argv.end(), {"--reflect-header", "authorization: Bearer " + reflecting});
    argv.push_back("http://" + server_->address() + "/" + method);
    return RunCommand(argv);
  }
  std::vector<std::string> Shard(const std::string& output) {
    return {"submit", "shard", "--input", model_, "--output", data_ + "/" + output, "--max-shard-size", "100KB"};
  }
  static std::string JobIdIn(const std::string& out) {
    const size_t at = out.find("job-");
    return at == std::string::npos ? "" : out.substr(at, 20);
  }

  TempDir dir_;
  std::string data_;
  std::string model_;
  std::string auth_file_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(AuthTest, EachRoleIsAllowedAndRefusedThroughTheCli) {
  Start();
  CommandResult none = Cli("", {"list"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("UNAUTHENTICATED"), std::string::npos) << none.err;
  CommandResult wrong = Cli("not-a-token", {"list"});
  EXPECT_NE(wrong.err.find("UNAUTHENTICATED"), std::string::npos) << wrong.err;

  EXPECT_EQ(Cli("rita-token", {"list"}).exit_code, 0);
  CommandResult reader_submit = Cli("rita-token", Shard("by-rita"));
  EXPECT_NE(reader_submit.exit_code, 0);
  EXPECT_NE(reader_submit.err.find("ROLE_REQUIRED"), std::string::npos) << reader_submit.err;
  EXPECT_NE(reader_submit.err.find("submitter"), std::string::npos) << reader_submit.err;
  EXPECT_FALSE(fs::exists(data_ + "/by-rita"));

  CommandResult submitted = Cli("alice-token", Shard("by-alice"));
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  const std::string id = JobIdIn(submitted.out);
  ASSERT_FALSE(id.empty()) << submitted.out;
  CommandResult got = Cli("rita-token", {"get", id});
  EXPECT_NE(got.out.find("owner alice"), std::string::npos) << got.out;

  // Another submitter may not cancel alice's job; an admin may (it has ended: past the check).
  CommandResult bob = Cli("bob-token", {"cancel", id});
  EXPECT_NE(bob.err.find("ROLE_REQUIRED"), std::string::npos) << bob.err;
  EXPECT_NE(bob.err.find("admin"), std::string::npos) << bob.err;
  Cli("rita-token", {"watch", id});  // until it ends
  CommandResult ops = Cli("ops-token", {"cancel", id});
  EXPECT_EQ(ops.err.find("ROLE_REQUIRED"), std::string::npos) << ops.err;
  EXPECT_NE(ops.err.find("JOB_ALREADY_ENDED"), std::string::npos) << ops.err;

  // Health needs no credentials (kubelet probes).
  auto health =
      grpc::health::v1::Health::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_TRUE(health->Check(&context, grpc::health::v1::HealthCheckRequest(), &response).ok());
}

TEST_F(AuthTest, BufCurlWithABearerHeader) {
  Start();
  CommandResult anonymous = Buf("", "modelsmith.v1.JobService/ListJobs", "{}", /*reflect_token=*/"rita-token");
  EXPECT_NE(anonymous.exit_code, 0);
  EXPECT_NE((anonymous.out + anonymous.err).find("unauthenticated"), std::string::npos) << anonymous.err;
  CommandResult reader = Buf("rita-token", "modelsmith.v1.JobService/ListJobs", "{}");
  EXPECT_EQ(reader.exit_code, 0) << reader.err;
  const std::string body =
      R"({"spec":{"shard":{"input":")" + model_ + R"(","output":")" + data_ + R"(/buf","max_shard_size":"100KB"}}})";
  CommandResult refused = Buf("rita-token", "modelsmith.v1.JobService/SubmitJob", body);
  EXPECT_NE((refused.out + refused.err).find("permission_denied"), std::string::npos) << refused.err;
  CommandResult accepted = Buf("alice-token", "modelsmith.v1.JobService/SubmitJob", body);
  EXPECT_EQ(accepted.exit_code, 0) << accepted.err;
  EXPECT_NE(accepted.out.find(R"("owner": "alice")"), std::string::npos) << accepted.out;
}

// Reflection is a reader's method like any other: buf curl asks it for the schema with the same
// bearer header it sends with the call.
TEST_F(AuthTest, ReflectionNeedsTheReaderRole) {
  WriteAuth({{"reader", "rita", "rita-token"}, {"submitter", "alice", "alice-token"}});
  Start();
  auto list_services = [&](const std::string& token) {
    std::vector<std::string> argv = {SourceDir() + "/tests/node_modules/.bin/buf",
                                     "curl",
                                     "--protocol",
                                     "grpc",
                                     "--http2-prior-knowledge",
                                     "--list-services"};
    if (!token.empty()) argv.insert(argv.end(), {"--reflect-header", "authorization: Bearer " + token});
    argv.push_back("http://" + server_->address());
    return RunCommand(argv);
  };
  // buf words UNAUTHENTICATED from reflection as "you are not authenticated".
  CommandResult anonymous = list_services("");
  EXPECT_NE(anonymous.exit_code, 0);
  EXPECT_EQ(anonymous.out.find("modelsmith.v1.JobService"), std::string::npos) << anonymous.out;
  EXPECT_NE((anonymous.out + anonymous.err).find("not authenticated"), std::string::npos) << anonymous.err;
  CommandResult unknown = list_services("not-a-token");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE((unknown.out + unknown.err).find("not authenticated"), std::string::npos) << unknown.err;
  CommandResult reader = list_services("rita-token");
  EXPECT_EQ(reader.exit_code, 0) << reader.err;
  EXPECT_NE(reader.out.find("modelsmith.v1.JobService"), std::string::npos) << reader.out;
  EXPECT_NE(reader.out.find("grpc.health.v1.Health"), std::string::npos) << reader.out;
  // Our own client sees the status itself.
  auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  for (const std::string token : {"", "not-a-token", "rita-token"}) {
    grpc::ClientContext context;
    if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto stream = reflection->ServerReflectionInfo(&context);
    grpc::reflection::v1alpha::ServerReflectionRequest request;
    request.set_list_services("*");
    stream->Write(request);
    stream->WritesDone();
    grpc::reflection::v1alpha::ServerReflectionResponse response;
    const bool answered = stream->Read(&response);
    const grpc::Status status = stream->Finish();
    if (token == "rita-token") {
      EXPECT_TRUE(answered);
      EXPECT_TRUE(status.ok()) << status.error_message();
      EXPECT_GE(response.list_services_response().service_size(), 2);
    } else {
      EXPECT_FALSE(answered) << token;
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << token;
    }
  }
  // A method no service has is still UNIMPLEMENTED, credentials or not.
  CommandResult missing = Buf("rita-token", "modelsmith.v1.NoSuchService/Nothing", "{}");
  EXPECT_NE(missing.exit_code, 0);
}

TEST_F(AuthTest, RewritingTheAuthFileRotatesTokensWithoutARestart) {
  Start();
  ASSERT_EQ(Cli("alice-token", {"list"}).exit_code, 0);
  WriteAuth({{"submitter", "alice", "alice-token-2"}});
  bool rotated = false;
  for (int i = 0; i < 20 && !rotated; ++i) {  // re-read within a second; 10 s at most
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    rotated = Cli("alice-token-2", {"list"}).exit_code == 0;
  }
  EXPECT_TRUE(rotated);
  EXPECT_NE(Cli("alice-token", {"list"}).err.find("UNAUTHENTICATED"), std::string::npos);
  EXPECT_NE(Cli("ops-token", {"list"}).err.find("UNAUTHENTICATED"), std::string::npos);
}

TEST_F(AuthTest, QuotaPerPrincipalAndAnAuditLinePerSubmitAndCancel) {
  Start({"--max-queued-per-principal", "1", "--job-io-limit", "20KB"});
  CommandResult first = Cli("alice-token", Shard("q1"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  CommandResult second = Cli("alice-token", Shard("q2"));
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.err.find("QUOTA_EXCEEDED"), std::string::npos) << second.err;
  EXPECT_EQ(Cli("bob-token", Shard("q3")).exit_code, 0) << "the quota is per principal";
  const std::string id = JobIdIn(first.out);
  EXPECT_EQ(Cli("alice-token", {"cancel", id}).exit_code, 0);

  const std::string log = server_->Log();
  EXPECT_NE(log.find("audit submit principal=alice peer="), std::string::npos) << log;
  EXPECT_NE(log.find("job=" + id + " outcome=OK"), std::string::npos) << log;
  EXPECT_NE(log.find("outcome=QUOTA_EXCEEDED"), std::string::npos) << log;
  EXPECT_NE(log.find("audit cancel principal=alice"), std::string::npos) << log;
  EXPECT_EQ(log.find("alice-token"), std::string::npos) << "a token reached the log";
}

TEST_F(AuthTest, ABrokenAuthFileRefusesToStart) {
  std::ofstream(auth_file_) << "wizard alice sha256:00\n";
  CommandResult r = RunCommand({ServerBinary(), "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir",
                                data_, "--auth-file", auth_file_});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("line 1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace modelsmith::testing
