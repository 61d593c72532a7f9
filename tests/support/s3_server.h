// S3Server: tests/tools/s3_server.js (s3rver behind a SigV4-verifying proxy) as a child process
// on a loopback port, with a bucket and fixed keys. It can be killed and started again on the
// same port and directory, to test retries.
#ifndef MODELSMITH_TESTS_SUPPORT_S3_SERVER_H_
#define MODELSMITH_TESTS_SUPPORT_S3_SERVER_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "workers/storage/s3_config.h"

namespace modelsmith::testing {

inline constexpr char kS3Bucket[] = "artifacts";
inline constexpr char kS3AccessKey[] = "testkey";
inline constexpr char kS3SecretKey[] = "testsecret";

class S3Server {
 public:
  // Starts on an ephemeral port, keeping objects under `directory`.
  explicit S3Server(std::string directory);
  ~S3Server();

  void Kill();
  // Starts again on the same port and directory.
  void Restart();

  bool running() const { return pid_ > 0; }
  std::string endpoint() const;  // "http://127.0.0.1:PORT"
  // A client configuration for this server (path style, its keys), with small parts.
  S3Config Config() const;
  // AWS_* assignments for a child process (modelsmithd, the CLI, boto3).
  std::vector<std::string> Environment() const;

 private:
  void Start(int port);

  std::string directory_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace modelsmith::testing

#endif  // MODELSMITH_TESTS_SUPPORT_S3_SERVER_H_
