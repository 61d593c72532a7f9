#include "server/config.h"

#include <thread>

#include "CLI/CLI.hpp"
#include "workers/jobs/size_string.h"

namespace modelsmith {

ServerConfig ParseServerConfig(int argc, char** argv, int* exit_code) {
  *exit_code = -1;
  ServerConfig config;
  CLI::App app{"modelsmithd: the Modelsmith model conversion service"};
  app.get_formatter()->column_width(36);
  std::string memory_budget = "auto";
  std::string log_format = "text";
  app.add_option("--listen", config.listen, "gRPC address HOST:PORT (port 0 picks a free port)")
      ->envname("MODELSMITH_LISTEN")->capture_default_str();
  app.add_option("--metrics-listen", config.metrics_listen, "Prometheus /metrics address HOST:PORT, or 'off'")
      ->envname("MODELSMITH_METRICS_LISTEN")->capture_default_str();
  app.add_option("--data-dir", config.data_dir, "job database and default storage root")
      ->envname("MODELSMITH_DATA_DIR")->capture_default_str();
  app.add_option("--roots", config.roots, "comma-separated directories jobs may read and write (default: the data dir)")
      ->delimiter(',')->envname("MODELSMITH_ROOTS");
  app.add_option("--workers", config.workers, "jobs run at once (default: the number of cores)")
      ->envname("MODELSMITH_WORKERS")->check(CLI::Range(0, 1024));
  app.add_option("--memory-budget", memory_budget, "memory for admitting jobs, e.g. 8GiB (default: cgroup limit, else 75% of RAM)")
      ->envname("MODELSMITH_MEMORY_BUDGET")->capture_default_str();
  app.add_option("--shutdown-grace", config.shutdown_grace_seconds, "seconds running jobs get to finish on SIGTERM")
      ->envname("MODELSMITH_SHUTDOWN_GRACE")->check(CLI::Range(0.0, 86400.0))->capture_default_str();
  std::string io_limit = "0";
  app.add_option("--job-io-limit", io_limit, "bytes per second each job may move, e.g. 200MB (0: unlimited)")
      ->envname("MODELSMITH_JOB_IO_LIMIT")->capture_default_str();
  app.add_option("--log-format", log_format, "text or json")
      ->envname("MODELSMITH_LOG_FORMAT")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    *exit_code = app.exit(e) == 0 ? 0 : 2;
    return config;
  }
  if (memory_budget != "auto") {
    absl::StatusOr<uint64_t> bytes = ParseSize(memory_budget);
    if (!bytes.ok() || *bytes == 0) {
      std::cerr << "--memory-budget: " << (bytes.ok() ? "must be positive" : std::string(bytes.status().message())) << "\n";
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
  config.log_format = log_format == "json" ? LogFormat::kJson : LogFormat::kText;
  if (config.workers == 0) config.workers = std::max(1u, std::thread::hardware_concurrency());
  return config;
}

}  // namespace modelsmith
