// ServerConfig: modelsmithd's flags. Every flag can also be set through the environment as
// MODELSMITH_<FLAG> (e.g. MODELSMITH_LISTEN, MODELSMITH_MEMORY_BUDGET); a flag on the command
// line wins. `modelsmithd --help` lists them.
#ifndef MODELSMITH_SERVER_CONFIG_H_
#define MODELSMITH_SERVER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "server/logging.h"

#include "server/tls.h"

namespace modelsmith {

struct ServerConfig {
  std::string listen = "127.0.0.1:50051";
  std::string metrics_listen = "127.0.0.1:9464";  // "off" disables the metrics endpoint
  std::string data_dir = "./data";
  std::string database;              // empty: sqlite:<data_dir>/modelsmith.db
  std::string replica_id;            // empty: <hostname>-<pid>
  double lease_seconds = 30;         // a claimed job's lease, renewed every third of it
  std::vector<std::string> roots;    // empty: the data directory alone
  size_t workers = 0;                // 0: the number of cores
  uint64_t memory_budget_bytes = 0;  // 0: the cgroup limit, else 75% of RAM
  double shutdown_grace_seconds = 30;
  uint64_t job_io_bytes_per_second = 0;  // 0: unlimited
  // S3: credentials and defaults from the standard AWS_* variables; these override.
  std::string s3_endpoint;    // --s3-endpoint, else AWS_ENDPOINT_URL
  std::string s3_region;      // --s3-region, else AWS_REGION
  std::string s3_addressing;  // "path", "virtual", or "" (path for a custom endpoint)
  uint64_t s3_part_size_bytes = 16 << 20;
  int s3_parts_in_flight = 4;
  int s3_max_attempts = 6;
  LogFormat log_format = LogFormat::kText;
  // Transport: TLS (mutual with a client CA); plaintext only on loopback unless insecure_plaintext.
  TlsSettings tls;
  bool insecure_plaintext = false;
  std::string health_listen;
  std::string metrics_auth_file;  // basic auth for /metrics (metrics.h); empty: none  // a plaintext listener serving
                                  // only grpc.health.v1; empty: off
  // Identities and roles (auth.h): off without an auth file.
  std::string auth_file;
  size_t max_queued_per_principal = 0;  // 0: no quota
};

// Parses argv (and the environment). On --help, or on a bad flag, prints to stdout/stderr and
// sets `exit_code` (0 for help, 2 for a bad flag); the caller then exits with it.
ServerConfig ParseServerConfig(int argc, char** argv, int* exit_code);

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_CONFIG_H_
