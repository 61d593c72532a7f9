// JobWatch: one watcher's cursor over one job's events, for streams that must not hold a thread
// while they wait (the WatchJob write reactor). The watcher is told by its wake function that
// events can be taken, then takes them when it is ready to send more: progress that arrived in
// between is coalesced to the latest, state changes, warnings and log lines never are.
// Thread-safe.
#ifndef MODELSMITH_SERVER_JOB_WATCH_H_
#define MODELSMITH_SERVER_JOB_WATCH_H_

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "modelsmith/v1/job_service.pb.h"
#include "server/tracked_job.h"

namespace modelsmith {

class JobWatch {
 public:
  struct Batch {
    std::vector<v1::JobEvent> events;  // in the order they happened
    bool done = false;                 // no event follows; `status` is how the stream ends
    absl::Status status;
  };

  // A watch of a job that has ended: one event, the job, and done.
  static std::shared_ptr<JobWatch> OfEnded(v1::Job job);
  // A watch of a live job: the first batch is the job now and its warnings so far. Registers
  // `wake` with the job. `closed` is the manager's: once true, the watch ends with UNAVAILABLE.
  static std::shared_ptr<JobWatch> OfLive(std::shared_ptr<TrackedJob> tracked, std::function<void()> wake,
                                          const std::atomic<bool>& closed);
  ~JobWatch();

  // The events not taken yet (possibly none).
  Batch Take();

  // Unregisters the wake function; idempotent. After it returns, `wake` is not called again.
  void Close();

 private:
  JobWatch(std::shared_ptr<TrackedJob> tracked, const std::atomic<bool>* closed)
      : tracked_(std::move(tracked)), closed_(closed) {}

  std::shared_ptr<TrackedJob> tracked_;  // null for an ended job
  const std::atomic<bool>* closed_;
  std::vector<v1::JobEvent> first_;
  uint64_t cursor_ = 0;
  uint64_t waker_ = 0;
  bool registered_ = false;
  bool done_ = false;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_JOB_WATCH_H_
