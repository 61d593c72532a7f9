#include "server/config.h"

#include <thread>

#include "CLI/CLI.hpp"
#include "workers/jobs/core/size_string.h"

namespace modelsmith {

ServerConfig ParseServerConfig(int argc, char** argv, int* exit_code) {
  *exit_code = -1;
  ServerConfig config;
  CLI::App app{"modelsmithd: the Modelsmith model conversion service"};
  app.get_formatter()->column_width(36);
  std::string memory_budget = "auto";
  std::string log_format = "text";
  app.add_option("--listen", config.listen, "gRPC address HOST:PORT (port 0 picks a free port)")
      ->envname("MODELSMITH_LISTEN")
      ->capture_default_str();
  app.add_option("--metrics-listen", config.metrics_listen, "Prometheus /metrics address HOST:PORT, or 'off'")
      ->envname("MODELSMITH_METRICS_LISTEN")
      ->capture_default_str();
  app.add_option("--data-dir", config.data_dir, "job database and default storage root")
      ->envname("MODELSMITH_DATA_DIR")
      ->capture_default_str();
  app.add_option("--database", config.database,
                 "job database: sqlite:PATH (default: sqlite:<data-dir>/modelsmith.db) or "
                 "postgresql://USER:PASSWORD@HOST:PORT/DB?sslmode=... (shared by every replica)")
      ->envname("MODELSMITH_DATABASE");
  app.add_option("--replica-id", config.replica_id,
                 "this replica's name in job leases and heartbeats, unique per database (default: HOSTNAME-PID)")
      ->envname("MODELSMITH_REPLICA_ID");
  app.add_option("--lease-seconds", config.lease_seconds,
                 "how long a replica's claim on a job lasts without renewal (renewed every third of it); a dead "
                 "replica's jobs run again elsewhere after this")
      ->envname("MODELSMITH_LEASE_SECONDS")
      ->check(CLI::Range(1.0, 3600.0))
      ->capture_default_str();
  app.add_option("--roots", config.roots,
                 "comma-separated directories and s3://bucket[/prefix] locations jobs may read and write (default: the "
                 "data dir; no bucket)")
      ->delimiter(',')
      ->envname("MODELSMITH_ROOTS");
  app.add_option("--tls-cert", config.tls.cert_file,
                 "PEM certificate chain: serve gRPC over TLS (re-read when it changes)")
      ->envname("MODELSMITH_TLS_CERT");
  app.add_option("--tls-key", config.tls.key_file, "PEM private key of --tls-cert (re-read when it changes)")
      ->envname("MODELSMITH_TLS_KEY");
  app.add_option("--tls-client-ca", config.tls.client_ca_file,
                 "PEM CA bundle: require client certificates it signed (mutual TLS)")
      ->envname("MODELSMITH_TLS_CLIENT_CA");
  app.add_option("--tls-reload-seconds", config.tls.reload_seconds,
                 "how often the TLS files are checked for a rotation")
      ->envname("MODELSMITH_TLS_RELOAD_SECONDS")
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  app.add_option("--metrics-auth-file", config.metrics_auth_file,
                 "lines 'USER sha256:HEX': /metrics then requires HTTP basic auth")
      ->envname("MODELSMITH_METRICS_AUTH_FILE");
  app.add_option("--health-listen", config.health_listen,
                 "HOST:PORT of a plaintext listener that serves only grpc.health.v1 (for probes that present "
                 "no certificate or token); off by default")
      ->envname("MODELSMITH_HEALTH_LISTEN");
  app.add_flag("--insecure-plaintext", config.insecure_plaintext,
               "allow plaintext gRPC on a non-loopback address (no encryption, no client identity)")
      ->envname("MODELSMITH_INSECURE_PLAINTEXT");
  app.add_option("--auth-file", config.auth_file,
                 "rules 'ROLE PRINCIPAL [sha256:HEX]' that turn authentication on (re-read when it changes)")
      ->envname("MODELSMITH_AUTH_FILE");
  app.add_option("--max-queued-per-principal", config.max_queued_per_principal,
                 "queued + running jobs a principal may have (0: no limit)")
      ->envname("MODELSMITH_MAX_QUEUED_PER_PRINCIPAL")
      ->capture_default_str();
  app.add_option("--workers", config.workers, "jobs run at once (default: the number of cores)")
      ->envname("MODELSMITH_WORKERS")
      ->check(CLI::Range(0, 1024));
  app.add_option("--memory-budget", memory_budget,
                 "memory for admitting jobs, e.g. 8GiB (default: cgroup limit, else 75% of RAM)")
      ->envname("MODELSMITH_MEMORY_BUDGET")
      ->capture_default_str();
  app.add_option("--shutdown-grace", config.shutdown_grace_seconds, "seconds running jobs get to finish on SIGTERM")
      ->envname("MODELSMITH_SHUTDOWN_GRACE")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  std::string io_limit = "0";
  app.add_option("--job-io-limit", io_limit, "bytes per second each job may move, e.g. 200MB (0: unlimited)")
      ->envname("MODELSMITH_JOB_IO_LIMIT")
      ->capture_default_str();
  std::string s3_part_size = "16MiB";
  app.add_option("--s3-endpoint", config.s3_endpoint,
                 "S3 endpoint URL, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL, else AWS)")
      ->envname("MODELSMITH_S3_ENDPOINT");
  app.add_option("--s3-region", config.s3_region, "S3 region (default: AWS_REGION, else us-east-1)")
      ->envname("MODELSMITH_S3_REGION");
  app.add_option("--s3-addressing", config.s3_addressing, "path or virtual (default: path for a custom endpoint)")
      ->envname("MODELSMITH_S3_ADDRESSING")
      ->check(CLI::IsMember({"path", "virtual"}));
  app.add_option("--s3-part-size", s3_part_size, "multipart part size (5MiB to 5GiB)")
      ->envname("MODELSMITH_S3_PART_SIZE")
      ->capture_default_str();
  app.add_option("--s3-parts-in-flight", config.s3_parts_in_flight, "parts uploading at once per object")
      ->envname("MODELSMITH_S3_PARTS_IN_FLIGHT")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--s3-max-attempts", config.s3_max_attempts, "attempts per S3 request, retries included")
      ->envname("MODELSMITH_S3_MAX_ATTEMPTS")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--log-format", log_format, "text or json")
      ->envname("MODELSMITH_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    *exit_code = app.exit(e) == 0 ? 0 : 2;
    return config;
  }
  if (memory_budget != "auto") {
    absl::StatusOr<uint64_t> bytes = ParseSize(memory_budget);
    if (!bytes.ok() || *bytes == 0) {
      std::cerr << "--memory-budget: " << (bytes.ok() ? "must be positive" : std::string(bytes.status().message()))
                << "\n";
      *exit_code = 2;
      return config;
    }
    config.memory_budget_bytes = *bytes;
  }
  absl::StatusOr<uint64_t> io_bytes = ParseSize(io_limit);
  if (!io_bytes.ok()) {
    std::cerr << "--job-io-limit: " << io_bytes.status().message() << "\n";
    *exit_code = 2;
    return config;
  }
  config.job_io_bytes_per_second = *io_bytes;
  absl::StatusOr<uint64_t> part_size = ParseSize(s3_part_size);
  if (!part_size.ok()) {
    std::cerr << "--s3-part-size: " << part_size.status().message() << "\n";
    *exit_code = 2;
    return config;
  }
  config.s3_part_size_bytes = *part_size;
  config.log_format = log_format == "json" ? LogFormat::kJson : LogFormat::kText;
  if (config.workers == 0) config.workers = std::max(1u, std::thread::hardware_concurrency());
  return config;
}

}  // namespace modelsmith
