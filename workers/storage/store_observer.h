// StoreObserver: how a remote store reports its requests, so that the server can export them as
// metrics without the storage layer knowing about Prometheus.
#ifndef MODELSMITH_WORKERS_STORAGE_STORE_OBSERVER_H_
#define MODELSMITH_WORKERS_STORAGE_STORE_OBSERVER_H_

#include <cstdint>
#include <string_view>

namespace modelsmith {

class StoreObserver {
 public:
  virtual ~StoreObserver() = default;
  // One finished request attempt. `code` is the HTTP status, or "error" when none came back.
  // Must be thread-safe.
  virtual void OnRequest(std::string_view store, std::string_view op, std::string_view code, double seconds,
                         uint64_t bytes_sent, uint64_t bytes_received) = 0;
  // An attempt that failed in a way worth retrying and is retried.
  virtual void OnRetry(std::string_view store, std::string_view op) = 0;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_STORE_OBSERVER_H_
