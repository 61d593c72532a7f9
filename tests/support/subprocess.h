// Child processes for integration tests: run a command to completion, or start modelsmithd and
// learn the ports it bound.
#ifndef MODELSMITH_TESTS_SUPPORT_SUBPROCESS_H_
#define MODELSMITH_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace modelsmith::testing {

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed by one
  std::string out;
  std::string err;
};

// Runs `argv` to completion (killed after `timeout`), with `stdin_text` on its standard input.
CommandResult RunCommand(const std::vector<std::string>& argv, const std::string& stdin_text = "",
                         std::chrono::seconds timeout = std::chrono::seconds(120));

// Writes a Llama-like checkpoint with tests/tools/make_checkpoint.py; extra flags as the script
// takes them (e.g. {"--shards", "3"}). Fails the test on error.
void MakeCheckpoint(const std::string& path, const std::vector<std::string>& flags = {});

// The number of threads process `pid` has now (/proc/PID/status), or -1.
int ThreadCountOf(pid_t pid);

// Paths of the built binaries and the source tree (compiled in by CMake).
std::string ServerBinary();
std::string CliBinary();
std::string SourceDir();

class ServerProcess {
 public:
  // Starts modelsmithd on 127.0.0.1 with ephemeral ports, storing under `data_dir`, plus
  // `extra_args`. Waits until it prints its ports (fails the test after 30 s).
  ServerProcess(const std::string& data_dir, std::vector<std::string> extra_args = {}, bool with_metrics = false,
                std::vector<std::string> environment = {});
  // Kills the server if it still runs.
  ~ServerProcess();

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  bool started() const { return grpc_port_ > 0; }
  std::string address() const;  // "127.0.0.1:PORT"
  int metrics_port() const { return metrics_port_; }
  int health_port() const { return health_port_; }  // with --health-listen
  pid_t pid() const { return pid_; }

  // Sends SIGTERM and waits (at most `timeout`); returns the exit code (128+signal if killed).
  int Terminate(std::chrono::seconds timeout = std::chrono::seconds(30));
  // SIGKILL and wait.
  void Kill();
  // The server's log so far.
  std::string Log() const;

 private:
  int Wait(std::chrono::seconds timeout);

  pid_t pid_ = -1;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  int health_port_ = 0;
  std::string log_path_;
};

}  // namespace modelsmith::testing

#endif  // MODELSMITH_TESTS_SUPPORT_SUBPROCESS_H_
