// modelsmithd: builds the service from its flags, serves until SIGTERM/SIGINT, then drains:
// health turns NOT_SERVING, submits are refused, running jobs get the grace period and are then
// interrupted (they run again after restart), and the process exits 0.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpc/health/v1/health.pb.h"
#include "server/config.h"
#include "server/job_manager.h"
#include "server/job_service.h"
#include "server/job_store.h"
#include "server/logging.h"
#include "server/metrics.h"
#include "server/reflection_gate.h"
#include "server/s3_setup.h"
#include "workers/pool/process_memory.h"
#include "workers/pool/worker_pool.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

constexpr char kServiceName[] = "modelsmith.v1.JobService";

// Shards stay open until published; let the process hold as many files as it may.
void RaiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

int Run(const ServerConfig& config) {
  InitLogging(config.log_format);
  RaiseFileLimit();
  // Transport first: a server that would listen unprotected, or with broken TLS files, never starts.
  const bool tls = !config.tls.cert_file.empty();
  if (absl::Status s = CheckPlaintextAllowed(config.listen, tls, config.insecure_plaintext); !s.ok()) {
    LogError("", std::string(s.message()));
    std::fprintf(stderr, "modelsmithd: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = MakeServerCredentials(config.tls);
  if (!credentials.ok()) {
    LogError("", std::string(credentials.status().message()));
    std::fprintf(stderr, "modelsmithd: %s\n", std::string(credentials.status().message()).c_str());
    return 2;
  }
  if (!tls && !IsLoopbackListen(config.listen)) {
    LogWarn("", absl::StrCat("serving plaintext gRPC on '", config.listen,
                             "' (--insecure-plaintext): traffic is unencrypted and callers are not identified"));
  }

  // Signals are taken by sigwait below; block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) {
    LogError("", absl::StrCat("cannot create data dir '", config.data_dir, "': ", ec.message()));
    return 1;
  }
  absl::StatusOr<ParsedUri> data_dir = ParseUri(config.data_dir);
  if (!data_dir.ok()) {
    LogError("", absl::StrCat("--data-dir: ", data_dir.status().message()));
    return 2;
  }
  const std::string database =
      config.database.empty() ? absl::StrCat("sqlite:", JoinUri(data_dir->path, "modelsmith.db")) : config.database;
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(database);
  if (!store.ok()) {
    LogError("", std::string(store.status().message()));
    std::fprintf(stderr, "modelsmithd: %s\n", std::string(store.status().message()).c_str());
    return absl::IsInvalidArgument(store.status()) || absl::IsFailedPrecondition(store.status()) ? 2 : 1;
  }
  LogInfo("", absl::StrCat("job database ", RedactDatabaseUrl(database)));
  if (absl::Status s = (*store)->ClaimSoleServer(); !s.ok()) {
    LogError("", std::string(s.message()));
    std::fprintf(stderr, "modelsmithd: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  const uint64_t budget = config.memory_budget_bytes > 0 ? config.memory_budget_bytes : DefaultMemoryBudgetBytes();
  WorkerPool pool(config.workers, budget);

  // Set while the manager exists; scrapes read its store-wide figures through it. Declared before
  // the metrics so that it outlives them.
  std::atomic<const JobManager*> manager_slot{nullptr};
  std::unique_ptr<Metrics> metrics;
  int metrics_port = 0;
  if (config.metrics_listen != "off") {
    metrics = std::make_unique<Metrics>([&pool, &manager_slot] {
      const JobManager* manager = manager_slot.load();
      const ClusterFigures cluster = manager != nullptr ? manager->cluster_figures() : ClusterFigures{};
      return SchedulerSnapshot{.queue_depth = static_cast<uint64_t>(cluster.queued),
                               .workers_busy = pool.busy(),
                               .memory_budget_bytes = pool.budget_bytes(),
                               .memory_reserved_bytes = pool.reserved_bytes(),
                               .jobs_running = static_cast<uint64_t>(cluster.running),
                               .replicas = static_cast<uint64_t>(cluster.replicas)};
    });
    absl::StatusOr<int> port = metrics->Serve(config.metrics_listen, {.basic_auth_file = config.metrics_auth_file,
                                                                      .tls_cert_file = config.tls.cert_file,
                                                                      .tls_key_file = config.tls.key_file});
    if (!port.ok()) {
      LogError("", std::string(port.status().message()));
      return 1;
    }
    metrics_port = *port;
  }

  absl::StatusOr<std::unique_ptr<ObjectStore>> s3 = MakeS3Store(config, metrics.get());
  if (!s3.ok()) {
    LogError("", absl::StrCat("S3 configuration: ", s3.status().message()));
    return 2;
  }
  const bool s3_enabled = *s3 != nullptr;
  StorageRouter router(config.roots.empty() ? std::vector<std::string>{data_dir->path} : config.roots, *std::move(s3));

  JobManager manager(**store, router, pool, metrics.get(),
                     {.io_bytes_per_second = config.job_io_bytes_per_second,
                      .replica_id = config.replica_id,
                      .lease_seconds = config.lease_seconds});
  if (absl::Status s = manager.Start(); !s.ok()) {
    LogError("", absl::StrCat("starting the job manager: ", s.message()));
    return 1;
  }
  manager_slot = &manager;

  manager.SetMaxActivePerOwner(config.max_queued_per_principal);
  std::unique_ptr<Authenticator> auth = std::make_unique<Authenticator>();
  if (!config.auth_file.empty()) {
    absl::StatusOr<std::unique_ptr<Authenticator>> loaded = Authenticator::FromFile(config.auth_file);
    if (!loaded.ok()) {
      LogError("", std::string(loaded.status().message()));
      std::fprintf(stderr, "modelsmithd: %s\n", std::string(loaded.status().message()).c_str());
      return 2;
    }
    auth = *std::move(loaded);
  } else if (!IsLoopbackListen(config.listen)) {
    LogWarn("", "no --auth-file: every caller that reaches the port may submit, cancel and read every job");
  }
  JobServiceImpl service(manager, router, *auth);
  grpc::EnableDefaultHealthCheckService(true);
  // The health listener serves health alone (no reflection, no job service).
  grpc::CallbackGenericService health_only;  // outlives health_server
  std::unique_ptr<grpc::Server> health_server;
  int health_port = 0;
  if (!config.health_listen.empty()) {
    grpc::ServerBuilder health_builder;
    health_builder.SetOption(WithoutReflection());
    // gRPC refuses a server with no method of its own; every other method here is UNIMPLEMENTED.
    health_builder.RegisterCallbackGenericService(&health_only);
    health_builder.AddListeningPort(config.health_listen, grpc::InsecureServerCredentials(), &health_port);
    health_server = health_builder.BuildAndStart();
    if (health_server == nullptr || health_port == 0) {
      LogError("", absl::StrCat("cannot listen on '", config.health_listen, "' (--health-listen)"));
      return 1;
    }
  }
  // Link the health messages into the generated pool so reflection can describe the service.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  ReflectionGate reflection(*auth);
  grpc::ServerBuilder builder;
  builder.SetOption(WithoutReflection());  // reflection is served through the gate, authenticated
  int grpc_port = 0;
  builder.AddListeningPort(config.listen, *credentials, &grpc_port);
  builder.RegisterService(&service);
  builder.RegisterCallbackGenericService(&reflection);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    LogError("", absl::StrCat("cannot listen on '", config.listen, "'"));
    return 1;
  }
  server->GetHealthCheckService()->SetServingStatus(kServiceName, true);
  if (health_server) health_server->GetHealthCheckService()->SetServingStatus(kServiceName, true);

  const std::string host = config.listen.substr(0, config.listen.rfind(':'));
  std::printf("modelsmithd listening on %s:%d (gRPC%s)\n", host.c_str(), grpc_port,
              !tls                                ? ""
              : config.tls.client_ca_file.empty() ? ", TLS"
                                                  : ", mutual TLS");
  if (metrics) {
    const std::string metrics_host = config.metrics_listen.substr(0, config.metrics_listen.rfind(':'));
    std::printf("modelsmithd metrics on %s://%s:%d/metrics\n", tls ? "https" : "http", metrics_host.c_str(),
                metrics_port);
  }
  std::vector<std::string> roots = router.local_roots();
  for (const std::string& root : router.s3_roots()) roots.push_back(absl::StrCat("s3://", root));
  if (health_server) {
    const std::string health_host = config.health_listen.substr(0, config.health_listen.rfind(':'));
    std::printf("modelsmithd health on %s:%d (plaintext, grpc.health.v1 only)\n", health_host.c_str(), health_port);
  }
  std::printf("modelsmithd database %s, replica %s, leases of %g s\n", RedactDatabaseUrl(database).c_str(),
              manager.replica_id().c_str(), config.lease_seconds);
  std::printf("modelsmithd data dir %s, roots %s, s3 %s, %zu workers, memory budget %llu bytes\n",
              data_dir->path.c_str(), absl::StrJoin(roots, ",").c_str(), s3_enabled ? "on" : "off (no AWS credentials)",
              pool.workers(), static_cast<unsigned long long>(budget));
  std::fflush(stdout);
  LogInfo("", absl::StrCat("serving on port ", grpc_port));

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  LogInfo("", absl::StrCat("received ", strsignal(signal_number), "; draining"));
  server->GetHealthCheckService()->SetServingStatus(false);
  if (health_server) health_server->GetHealthCheckService()->SetServingStatus(false);
  manager.BeginDrain();
  const auto grace = std::chrono::milliseconds(static_cast<int64_t>(config.shutdown_grace_seconds * 1000));
  if (!manager.WaitForRunning(grace)) {
    LogInfo("",
            "grace period over; interrupting running jobs (their leases are released: they run again on another "
            "replica or after restart)");
    manager.InterruptRunning();
  }
  pool.Shutdown();
  manager_slot = nullptr;
  manager.Close();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (health_server) health_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  LogInfo("", "stopped");
  return 0;
}

}  // namespace
}  // namespace modelsmith

int main(int argc, char** argv) {
  int exit_code = 0;
  modelsmith::ServerConfig config = modelsmith::ParseServerConfig(argc, argv, &exit_code);
  if (exit_code >= 0) return exit_code;
  return modelsmith::Run(config);
}
