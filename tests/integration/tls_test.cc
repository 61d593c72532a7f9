// Transport security against the real modelsmithd: TLS, mutual TLS, certificate rotation without
// a restart, and the refusal to serve plaintext off loopback. Certificates are made by `openssl`
// in the test setup (EC P-256, valid for a day); everything listens on 127.0.0.1.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/support/job_client.h"
#include "tests/support/read_file.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/data";
    pki_ = dir_.path() + "/pki";
    fs::create_directories(data_);
    fs::create_directories(pki_);
    MakeCa("ca");
    MakeCa("other-ca");
    MakeCert("server", "ca", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost");
    MakeCert("server2", "other-ca", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost");
    MakeCert("alice", "ca", "alice", "");
    MakeCert("mallory", "other-ca", "mallory", "");
  }

  void OpenSsl(std::vector<std::string> args) {
    args.insert(args.begin(), "openssl");
    CommandResult r = RunCommand(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  void MakeCa(const std::string& name) {
    OpenSsl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             Pem(name + ".key"), "-out", Pem(name + ".pem"), "-days", "1", "-subj", "/CN=" + name});
  }
  void MakeCert(const std::string& name, const std::string& ca, const std::string& cn, const std::string& san) {
    OpenSsl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
             Pem(name + ".key"), "-out", Pem(name + ".csr"), "-subj", "/CN=" + cn});
    std::vector<std::string> sign = {"x509",
                                     "-req",
                                     "-in",
                                     Pem(name + ".csr"),
                                     "-CA",
                                     Pem(ca + ".pem"),
                                     "-CAkey",
                                     Pem(ca + ".key"),
                                     "-CAcreateserial",
                                     "-out",
                                     Pem(name + ".pem"),
                                     "-days",
                                     "1"};
    if (!san.empty()) {
      std::ofstream(Pem(name + ".ext")) << san << "\n";
      sign.insert(sign.end(), {"-extfile", Pem(name + ".ext")});
    }
    OpenSsl(sign);
  }
  std::string Pem(const std::string& name) const { return pki_ + "/" + name; }

  void Start(std::vector<std::string> args) {
    server_ = std::make_unique<ServerProcess>(data_, std::move(args));
    ASSERT_TRUE(server_->started());
  }
  // A fresh connection (its own subchannel pool, so no connection is reused between calls).
  grpc::Status ListOver(std::shared_ptr<grpc::ChannelCredentials> credentials) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto stub = v1::JobService::NewStub(grpc::CreateCustomChannel(server_->address(), credentials, args));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ListJobsResponse response;
    return stub->ListJobs(&context, v1::ListJobsRequest(), &response);
  }
  std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& ca, const std::string& client = "") {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = ReadFile(Pem(ca + ".pem"));
    if (!client.empty()) {
      options.pem_cert_chain = ReadFile(Pem(client + ".pem"));
      options.pem_private_key = ReadFile(Pem(client + ".key"));
    }
    return grpc::SslCredentials(options);
  }
  std::vector<std::string> ServerTls(const std::string& cert = "server") {
    return {"--tls-cert", Pem(cert + ".pem"), "--tls-key", Pem(cert + ".key")};
  }

  TempDir dir_;
  std::string data_;
  std::string pki_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(TlsTest, TlsServerServesTlsClientsAndRefusesPlaintext) {
  Start(ServerTls());
  EXPECT_TRUE(ListOver(Tls("ca")).ok());
  EXPECT_FALSE(ListOver(grpc::InsecureChannelCredentials()).ok());
  EXPECT_FALSE(ListOver(Tls("other-ca")).ok()) << "a server certificate the client does not trust";

  CommandResult cli = RunCommand({CliBinary(), "--server", server_->address(), "--tls-ca", Pem("ca.pem"), "list"});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  CommandResult plain = RunCommand({CliBinary(), "--server", server_->address(), "list"});
  EXPECT_NE(plain.exit_code, 0);
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateTheCaSigned) {
  std::vector<std::string> args = ServerTls();
  args.insert(args.end(), {"--tls-client-ca", Pem("ca.pem")});
  Start(args);
  EXPECT_TRUE(ListOver(Tls("ca", "alice")).ok());
  EXPECT_FALSE(ListOver(Tls("ca")).ok()) << "no client certificate";
  EXPECT_FALSE(ListOver(Tls("ca", "mallory")).ok()) << "a client certificate from another CA";

  CommandResult cli = RunCommand({CliBinary(), "--server", server_->address(), "--tls-ca", Pem("ca.pem"), "--tls-cert",
                                  Pem("alice.pem"), "--tls-key", Pem("alice.key"), "list"});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
}

TEST_F(TlsTest, AClientCertificateNamesThePrincipalAndItsRole) {
  std::ofstream(dir_.path() + "/auth") << "reader alice\n";
  std::vector<std::string> args = ServerTls();
  args.insert(args.end(), {"--tls-client-ca", Pem("ca.pem"), "--auth-file", dir_.path() + "/auth"});
  Start(args);
  EXPECT_TRUE(ListOver(Tls("ca", "alice")).ok());
  std::vector<std::string> cli = {CliBinary(),  "--server",       server_->address(), "--tls-ca",      Pem("ca.pem"),
                                  "--tls-cert", Pem("alice.pem"), "--tls-key",        Pem("alice.key")};
  std::vector<std::string> submit = cli;
  submit.insert(submit.end(), {"submit", "shard", "--input", data_ + "/absent.safetensors", "--output", data_ + "/o",
                               "--max-shard-size", "1MB"});
  CommandResult refused = RunCommand(submit);
  EXPECT_NE(refused.err.find("ROLE_REQUIRED"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("alice"), std::string::npos) << refused.err;
}

TEST_F(TlsTest, TheHealthListenerServesHealthAloneInPlaintext) {
  std::vector<std::string> args = ServerTls();
  args.insert(args.end(), {"--tls-client-ca", Pem("ca.pem"), "--health-listen", "127.0.0.1:0"});
  Start(args);
  ASSERT_GT(server_->health_port(), 0);
  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->health_port()), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  request.set_service("modelsmith.v1.JobService");
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(health->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  // Nothing else is served there.
  auto jobs = v1::JobService::NewStub(channel);
  grpc::ClientContext list_context;
  v1::ListJobsResponse listed;
  EXPECT_EQ(jobs->ListJobs(&list_context, v1::ListJobsRequest(), &listed).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  // Not even reflection: the plaintext port must not describe the API to anyone.
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext reflect_context;
  auto stream = reflection->ServerReflectionInfo(&reflect_context);
  grpc::reflection::v1alpha::ServerReflectionRequest list;
  list.set_list_services("*");
  stream->Write(list);
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse answer;
  EXPECT_FALSE(stream->Read(&answer));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(TlsTest, ARotatedCertificateIsServedWithoutARestart) {
  std::vector<std::string> args = ServerTls("live");
  fs::copy_file(Pem("server.pem"), Pem("live.pem"));
  fs::copy_file(Pem("server.key"), Pem("live.key"));
  args.insert(args.end(), {"--tls-reload-seconds", "1"});
  Start(args);
  ASSERT_TRUE(ListOver(Tls("ca")).ok());
  ASSERT_FALSE(ListOver(Tls("other-ca")).ok());

  // The Secret is renewed: a certificate from another CA, each file replaced by a rename.
  fs::copy_file(Pem("server2.key"), Pem("live.key.new"));
  fs::copy_file(Pem("server2.pem"), Pem("live.pem.new"));
  fs::rename(Pem("live.key.new"), Pem("live.key"));
  fs::rename(Pem("live.pem.new"), Pem("live.pem"));
  bool rotated = false;
  for (int i = 0; i < 30 && !rotated; ++i) {  // the reload interval is 1 s; 15 s at most
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    rotated = ListOver(Tls("other-ca")).ok();
  }
  EXPECT_TRUE(rotated) << "new connections still get the old certificate";
  EXPECT_FALSE(ListOver(Tls("ca")).ok()) << "the old certificate is still served";
}

// /metrics is HTTPS with the gRPC port's certificate when TLS is on, and follows its rotation:
// the files are read at every handshake.
TEST_F(TlsTest, MetricsAreServedOverTlsWithTheSameCertificate) {
  fs::copy_file(Pem("server.pem"), Pem("live.pem"));
  fs::copy_file(Pem("server.key"), Pem("live.key"));
  server_ = std::make_unique<ServerProcess>(data_, ServerTls("live"), /*with_metrics=*/true);
  ASSERT_TRUE(server_->started());
  ASSERT_GT(server_->metrics_port(), 0);
  const std::string port = std::to_string(server_->metrics_port());
  auto scrape = [&](const std::string& scheme, const std::string& ca) {
    std::vector<std::string> argv = {"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"};
    if (!ca.empty()) argv.insert(argv.end(), {"--cacert", Pem(ca + ".pem")});
    argv.push_back(scheme + "://127.0.0.1:" + port + "/metrics");
    return RunCommand(argv);
  };
  EXPECT_EQ(scrape("https", "ca").out, "200");
  EXPECT_NE(scrape("https", "other-ca").exit_code, 0) << "a certificate the client does not trust was accepted";
  EXPECT_NE(scrape("http", "").out, "200") << "plaintext scrape of a TLS metrics port";
  CommandResult tls10 = RunCommand({"curl", "-s", "--max-time", "10", "--cacert", Pem("ca.pem"), "--tlsv1.0",
                                    "--tls-max", "1.1", "https://127.0.0.1:" + port + "/metrics"});
  EXPECT_NE(tls10.exit_code, 0) << "TLS below 1.2 was accepted";

  fs::copy_file(Pem("server2.key"), Pem("live.key.new"));
  fs::copy_file(Pem("server2.pem"), Pem("live.pem.new"));
  fs::rename(Pem("live.key.new"), Pem("live.key"));
  fs::rename(Pem("live.pem.new"), Pem("live.pem"));
  EXPECT_EQ(scrape("https", "other-ca").out, "200") << "the rotated certificate is not served";
  EXPECT_NE(scrape("https", "ca").exit_code, 0) << "the old certificate is still served";
}

TEST_F(TlsTest, PlaintextOffLoopbackAndBrokenTlsFilesRefuseToStart) {
  CommandResult plain =
      RunCommand({ServerBinary(), "--listen", "0.0.0.0:0", "--metrics-listen", "off", "--data-dir", data_});
  EXPECT_EQ(plain.exit_code, 2);
  EXPECT_NE(plain.err.find("--insecure-plaintext"), std::string::npos) << plain.err;

  CommandResult mismatched =
      RunCommand({ServerBinary(), "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", data_,
                  "--tls-cert", Pem("server.pem"), "--tls-key", Pem("alice.key")});
  EXPECT_EQ(mismatched.exit_code, 2);
  EXPECT_NE(mismatched.err.find("is not the key of the certificate"), std::string::npos) << mismatched.err;

  CommandResult ca_alone = RunCommand({ServerBinary(), "--listen", "127.0.0.1:0", "--metrics-listen", "off",
                                       "--data-dir", data_, "--tls-client-ca", Pem("ca.pem")});
  EXPECT_EQ(ca_alone.exit_code, 2);
  EXPECT_NE(ca_alone.err.find("--tls-client-ca needs --tls-cert"), std::string::npos) << ca_alone.err;
}

}  // namespace
}  // namespace modelsmith::testing
