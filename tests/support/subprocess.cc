#include "tests/support/subprocess.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

namespace modelsmith::testing {
namespace {

std::vector<char*> Argv(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  return argv;
}

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

std::string ServerBinary() { return MODELSMITHD_PATH; }
std::string CliBinary() { return MODELSMITH_CLI_PATH; }
std::string SourceDir() { return MODELSMITH_SOURCE_DIR; }

CommandResult RunCommand(const std::vector<std::string>& args, const std::string& stdin_text,
                         std::chrono::seconds timeout) {
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0 || pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe failed";
    return {};
  }
  std::vector<char*> argv = Argv(args);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  std::thread writer([fd = in_pipe[1], stdin_text] {
    size_t done = 0;
    while (done < stdin_text.size()) {
      ssize_t n = write(fd, stdin_text.data() + done, stdin_text.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    close(fd);
  });
  CommandResult result;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int open_fds = 2;
  while (open_fds > 0) {
    const int wait_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (wait_ms <= 0) {
      ADD_FAILURE() << "command timed out: " << args[0];
      kill(pid, SIGKILL);
      break;
    }
    if (poll(fds, 2, wait_ms) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buffer[65536];
      ssize_t n = read(fds[i].fd, buffer, sizeof buffer);
      if (n > 0) {
        (i == 0 ? result.out : result.err).append(buffer, static_cast<size_t>(n));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (pollfd& p : fds) {
    if (p.fd >= 0) close(p.fd);
  }
  writer.join();
  int status = 0;
  waitpid(pid, &status, 0);
  result.exit_code = DecodeWaitStatus(status);
  return result;
}

int ThreadCountOf(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

void MakeCheckpoint(const std::string& path, const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"python3", SourceDir() + "/tests/tools/make_checkpoint.py", path};
  args.insert(args.end(), flags.begin(), flags.end());
  CommandResult result = RunCommand(args);
  ASSERT_EQ(result.exit_code, 0) << result.err;
}

ServerProcess::ServerProcess(const std::string& data_dir, std::vector<std::string> extra_args, bool with_metrics,
                             std::vector<std::string> environment) {
  // One log per process: replicas may share a data directory.
  static std::atomic<int> servers{0};
  log_path_ = data_dir + "/modelsmithd-" + std::to_string(++servers) + ".log";
  std::vector<std::string> args = {ServerBinary(),
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--data-dir",
                                   data_dir,
                                   "--metrics-listen",
                                   with_metrics ? "127.0.0.1:0" : "off"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe failed";
    return;
  }
  std::vector<char*> argv = Argv(args);
  mkdir(data_dir.c_str(), 0755);
  pid_ = fork();
  if (pid_ == 0) {
    for (std::string& assignment : environment) putenv(assignment.data());
    int log = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(out_pipe[1], 1);
    dup2(log, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  std::string text;
  const std::regex grpc_line(R"(listening on 127\.0\.0\.1:(\d+))");
  const std::regex metrics_line(R"(metrics on https?://127\.0\.0\.1:(\d+)/metrics)");
  const std::regex health_line(R"(health on 127\.0\.0\.1:(\d+))");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  pollfd pfd = {out_pipe[0], POLLIN, 0};
  while (std::chrono::steady_clock::now() < deadline) {
    if (poll(&pfd, 1, 100) <= 0) continue;
    char buffer[4096];
    ssize_t n = read(out_pipe[0], buffer, sizeof buffer);
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
    std::smatch match;
    if (grpc_port_ == 0 && std::regex_search(text, match, grpc_line)) grpc_port_ = std::stoi(match[1]);
    if (metrics_port_ == 0 && std::regex_search(text, match, metrics_line)) metrics_port_ = std::stoi(match[1]);
    if (health_port_ == 0 && std::regex_search(text, match, health_line)) health_port_ = std::stoi(match[1]);
    if (grpc_port_ > 0 && (!with_metrics || metrics_port_ > 0) && text.find("data dir") != std::string::npos) break;
  }
  // Keep reading stdout in the background so the server never blocks on a full pipe.
  std::thread([fd = out_pipe[0]] {
    char buffer[4096];
    while (read(fd, buffer, sizeof buffer) > 0) {
    }
    close(fd);
  }).detach();
  if (grpc_port_ == 0) ADD_FAILURE() << "modelsmithd did not start; stdout: " << text << "\nlog: " << Log();
}

ServerProcess::~ServerProcess() { Kill(); }

std::string ServerProcess::address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }

int ServerProcess::Wait(std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      pid_ = -1;
      return DecodeWaitStatus(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

int ServerProcess::Terminate(std::chrono::seconds timeout) {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int code = Wait(timeout);
  if (code == -1) {
    ADD_FAILURE() << "modelsmithd did not exit after SIGTERM";
    Kill();
  }
  return code;
}

void ServerProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string ServerProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace modelsmith::testing
