// TrackedJob: the in-memory record of a QUEUED or RUNNING job, shared by the manager, the running
// job's context and the job's watchers. Everything but the two stop flags is guarded by `mutex`.
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
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_TRACKED_JOB_H_
