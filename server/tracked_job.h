// TrackedJob: the in-memory record of a QUEUED or RUNNING job, shared by the manager, the running
// job's context and the job's watchers: either a job this replica claimed (it holds the lease) or
// a view of a job another replica runs, fed from the store (RemoteJobFeed). Everything but the
// atomic flags is guarded by `mutex`.
#ifndef MODELSMITH_SERVER_TRACKED_JOB_H_
#define MODELSMITH_SERVER_TRACKED_JOB_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "modelsmith/v1/job_service.pb.h"

namespace modelsmith {

struct TrackedJob {
  std::mutex mutex;
  std::condition_variable changed;  // notified with every event and when the job ends
  v1::Job job;
  uint64_t seq = 0;                                       // of the latest event
  std::vector<std::pair<uint64_t, v1::JobEvent>> events;  // discrete events, in order
  uint64_t progress_seq = 0;                              // of the latest progress (coalesced)
  bool started = false;  // the job's run began (RUNNING): only a stop request can end it now
  bool ended = false;    // the final state is recorded; no event follows
  size_t log_lines = 0;
  std::chrono::steady_clock::time_point last_persist{};
  std::map<uint64_t, std::function<void()>> wakers;  // open watches, by watch number
  uint64_t next_waker = 0;
  std::atomic<bool> cancel{false};
  std::atomic<bool> interrupt{false};

  bool remote = false;  // a view fed from the store (RemoteJobFeed), not a job this replica runs

  // The lease, for a job this replica claimed.
  int64_t lease_token = 0;
  std::chrono::steady_clock::time_point lease_renewed{};
  std::atomic<bool> lease_lost{false};  // another replica took the job over: stop, write nothing
  // Events not yet written to a shared store, in order; `outbox_mutex` keeps writers in order.
  std::vector<v1::JobEvent> outbox;
  std::mutex outbox_mutex;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_TRACKED_JOB_H_
