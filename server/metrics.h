// Metrics: every Prometheus series modelsmithd exports, on its own port at /metrics.
// Names follow Prometheus conventions (base units, _bytes, _seconds, _total); labels are kinds
// and states only, never job ids or model names.
#ifndef MODELSMITH_SERVER_METRICS_H_
#define MODELSMITH_SERVER_METRICS_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics_tls.h"
#include "workers/storage/store_observer.h"

namespace modelsmith {

// Scheduler figures read at scrape time.
struct SchedulerSnapshot {
  uint64_t queue_depth = 0;   // queued in the job database (every replica's)
  uint64_t workers_busy = 0;  // this replica's running jobs
  uint64_t memory_budget_bytes = 0;
  uint64_t memory_reserved_bytes = 0;
  uint64_t jobs_running = 0;  // running in the job database (every replica's)
  uint64_t replicas = 0;      // replicas with a recent heartbeat
};

class Metrics final : public StoreObserver {
 public:
  // `scheduler` is called on every scrape. Thread-safe.
  explicit Metrics(std::function<SchedulerSnapshot()> scheduler);
  ~Metrics();

  struct Serving {
    // Lines "USER sha256:HEX", HEX the SHA-256 (lowercase hex) of the password, read once at
    // start; set: scrapes need HTTP basic auth (Prometheus' basic_auth works with it).
    std::string basic_auth_file;
    // Both set: HTTPS with this certificate chain and key (metrics_tls.h: re-read per handshake;
    // civetweb then listens on a private loopback port behind the TLS front).
    std::string tls_cert_file;
    std::string tls_key_file;
  };
  // Serves /metrics on `address` ("host:port", port 0 picks one). Returns the bound port.
  // INVALID_ARGUMENT (METRICS_AUTH_FILE_INVALID, naming the line) for an auth file that does not
  // parse; UNAVAILABLE when the address cannot be bound or TLS cannot start.
  absl::StatusOr<int> Serve(const std::string& address, const Serving& serving = {});

  // A job reached a terminal state (SUCCEEDED, FAILED or CANCELLED).
  void RecordJobFinished(const v1::Job& job);

  // StoreObserver: object store requests, as modelsmith_object_store_*.
  void OnRequest(std::string_view store, std::string_view op, std::string_view code, double seconds,
                 uint64_t bytes_sent, uint64_t bytes_received) override;
  void OnRetry(std::string_view store, std::string_view op) override;

  prometheus::Registry& registry() { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> runtime_collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<MetricsTlsFront> tls_front_;  // with TLS: in front of exposer_
  prometheus::Family<prometheus::Counter>& jobs_total_;
  prometheus::Family<prometheus::Counter>& job_failures_;
  prometheus::Family<prometheus::Histogram>& job_duration_;
  prometheus::Counter& read_bytes_;
  prometheus::Counter& written_bytes_;
  prometheus::Counter& tensors_processed_;
  prometheus::Histogram& shard_size_;
  prometheus::Gauge& shard_imbalance_;
  prometheus::Histogram& bisect_chunk_size_;
  prometheus::Gauge& bisect_imbalance_;
  prometheus::Family<prometheus::Gauge>& job_peak_resident_;
  prometheus::Family<prometheus::Counter>& store_requests_;
  prometheus::Family<prometheus::Histogram>& store_request_duration_;
  prometheus::Family<prometheus::Counter>& store_retries_;
  prometheus::Family<prometheus::Counter>& store_sent_bytes_;
  prometheus::Family<prometheus::Counter>& store_received_bytes_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_METRICS_H_
