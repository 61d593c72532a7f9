#include "tests/support/s3_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <thread>

#include "tests/support/subprocess.h"

namespace modelsmith::testing {

S3Server::S3Server(std::string directory) : directory_(std::move(directory)) { Start(0); }

S3Server::~S3Server() { Kill(); }

void S3Server::Start(int port) {
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe failed";
    return;
  }
  const std::string script = SourceDir() + "/tests/tools/s3_server.js";
  const std::string port_text = std::to_string(port);
  pid_ = fork();
  if (pid_ == 0) {
    dup2(out_pipe[1], 1);
    // s3rver makes ListObjectsV2 continuation tokens with DES, which OpenSSL 3 only offers
    // through its legacy provider.
    execlp("node", "node", "--openssl-legacy-provider", script.c_str(), "--port", port_text.c_str(), "--directory",
           directory_.c_str(), "--bucket", kS3Bucket, "--access-key", kS3AccessKey, "--secret-key", kS3SecretKey,
           static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out_pipe[1]);
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  pollfd pfd = {out_pipe[0], POLLIN, 0};
  std::smatch match;
  const std::regex ready(R"(s3 listening on 127\.0\.0\.1:(\d+))");
  while (std::chrono::steady_clock::now() < deadline && !std::regex_search(text, match, ready)) {
    if (poll(&pfd, 1, 100) <= 0) continue;
    char buffer[1024];
    ssize_t n = read(out_pipe[0], buffer, sizeof buffer);
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  close(out_pipe[0]);
  if (!std::regex_search(text, match, ready)) {
    ADD_FAILURE() << "the S3 test server did not start (is tests/node_modules installed?): " << text;
    Kill();
    return;
  }
  port_ = std::stoi(match[1]);
}

void S3Server::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void S3Server::Restart() {
  Kill();
  // The port may take a moment to be free again.
  for (int i = 0; i < 50 && pid_ <= 0; ++i) {
    Start(port_);
    if (pid_ <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::string S3Server::endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

S3Config S3Server::Config() const {
  S3Config config;
  config.endpoint = endpoint();
  config.access_key_id = kS3AccessKey;
  config.secret_access_key = kS3SecretKey;
  config.path_style = true;
  config.part_size_bytes = 5 << 20;
  config.max_parts_in_flight = 2;
  config.base_backoff = std::chrono::milliseconds(50);
  config.max_backoff = std::chrono::milliseconds(500);
  return config;
}

std::vector<std::string> S3Server::Environment() const {
  return {"AWS_ACCESS_KEY_ID=" + std::string(kS3AccessKey), "AWS_SECRET_ACCESS_KEY=" + std::string(kS3SecretKey),
          "AWS_ENDPOINT_URL=" + endpoint(), "AWS_REGION=us-east-1"};
}

}  // namespace modelsmith::testing
