// JobManager: the job lifecycle. Submits jobs into the store and the worker pool, runs them,
// records every state change, serves watchers, recovers after a restart and drains on shutdown.
//
// States: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED; QUEUED -> CANCELLED. A RUNNING job
// interrupted by shutdown goes back to QUEUED and runs again after restart; one found RUNNING at
// startup (the process died) is queued again with attempt+1, and FAILED (reason INTERRUPTED) once
// it has been interrupted 3 times. A QUEUED or RUNNING job holds its output location (recorded in
// the store with the job); no other job may be submitted on an overlapping one.
// Thread-safe; no method holds a lock across another job's preflight.
#ifndef MODELSMITH_SERVER_JOB_MANAGER_H_
#define MODELSMITH_SERVER_JOB_MANAGER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job_service.pb.h"
#include "server/job_store.h"
#include "server/job_watch.h"
#include "server/metrics.h"
#include "workers/jobs/job_kinds.h"
#include "workers/pool/worker_pool.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

inline constexpr uint32_t kMaxInterruptedAttempts = 3;

class JobManager {
 public:
  // `metrics` may be null. `io_bytes_per_second` paces every job (0: unlimited).
  JobManager(JobStore& store, const StorageRouter& router, WorkerPool& pool, Metrics* metrics,
             uint64_t io_bytes_per_second = 0);
  ~JobManager();

  // Requeues the jobs a previous process left QUEUED or RUNNING. Call once before serving.
  absl::Status Recover();

  // INVALID_ARGUMENT / UNIMPLEMENTED / PERMISSION_DENIED / NOT_FOUND / FAILED_PRECONDITION for a
  // spec that cannot run; FAILED_PRECONDITION (OUTPUT_BUSY, naming the holder in "job_id") when a
  // QUEUED or RUNNING job writes the same or an enclosing/enclosed output; ALREADY_EXISTS
  // (REQUEST_ID_REUSED) for a request_id used with another spec; UNAVAILABLE (SHUTTING_DOWN)
  // while draining; DEADLINE_EXCEEDED (CALLER_GONE) when `caller_waiting` returns false once the
  // preflight is done: then no job is created. The preflight (which may read a large input) runs
  // without any lock, so other submits, cancels and reads never wait for it.
  // `owner` is recorded with the job; with a quota set, a submit past `max_active_per_owner`
  // QUEUED + RUNNING jobs of that owner is RESOURCE_EXHAUSTED (QUOTA_EXCEEDED).
  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec, const std::string& request_id,
                                 const std::function<bool()>& caller_waiting = nullptr,
                                 const std::string& owner = "anonymous");

  // 0: no quota.
  void SetMaxActivePerOwner(size_t limit) { max_active_per_owner_ = limit; }

  absl::StatusOr<v1::Job> Get(const std::string& id);

  absl::StatusOr<v1::ListJobsResponse> List(const v1::ListJobsRequest& request);

  // QUEUED: CANCELLED at once. RUNNING: asks it to stop and waits up to a few seconds for it to
  // end. Ended: FAILED_PRECONDITION (JOB_ALREADY_ENDED).
  absl::StatusOr<v1::Job> Cancel(const std::string& id);

  // Opens a watch on job `id` (NOT_FOUND when there is none). Its first batch holds the job as it
  // is now and each warning raised so far; then each change until the job ends, then the final
  // job. `wake` is called, from any thread and with no lock of the manager held, whenever new
  // events can be taken; it must not block. See JobWatch.
  absl::StatusOr<std::shared_ptr<JobWatch>> OpenWatch(const std::string& id, std::function<void()> wake);

  // Refuses new submits from now on.
  void BeginDrain();
  // Waits until no job runs or `grace` passes; true if none runs.
  bool WaitForRunning(std::chrono::milliseconds grace);
  // Stops running jobs (they return to QUEUED for the next process) and waits for them.
  void InterruptRunning();
  // Wakes and ends every watcher.
  void Close();

  size_t running() const;

  // Test seam: called on the worker thread after the pool admitted a job and before it starts,
  // with the job's id. Set it before submitting.
  void SetBeforeStartHookForTesting(std::function<void(const std::string& job_id)> hook) {
    before_start_hook_ = std::move(hook);
  }
  // Test seam: called on the submitting thread right before a submit's preflight, with the spec.
  void SetBeforePreflightHookForTesting(std::function<void(const v1::JobSpec& spec)> hook) {
    before_preflight_hook_ = std::move(hook);
  }

 private:
  using Tracked = TrackedJob;
  class Context;

  // OUTPUT_BUSY when a QUEUED or RUNNING job holds an output overlapping `output`.
  absl::Status CheckOutputFree(const JobOutput& output);
  // Marks a job that has not started CANCELLED. REQUIRES: tracked.mutex held, job not started.
  void CancelBeforeStart(Tracked& tracked);

  void Schedule(const std::shared_ptr<Tracked>& tracked);
  void Execute(const std::shared_ptr<Tracked>& tracked);
  // REQUIRES: tracked->mutex held. Appends an event and wakes watchers.
  void AppendEvent(Tracked& tracked, v1::JobEvent event);
  void Persist(const v1::Job& job);
  // Calls every watcher's wake function. REQUIRES: tracked.mutex not held.
  static void WakeWatchers(Tracked& tracked);
  void Finish(const std::shared_ptr<Tracked>& tracked);
  std::shared_ptr<Tracked> Find(const std::string& id) const;

  JobStore& store_;
  const StorageRouter& router_;
  WorkerPool& pool_;
  Metrics* metrics_;
  const uint64_t io_bytes_per_second_;

  mutable std::mutex mutex_;
  std::condition_variable running_changed_;
  std::map<std::string, std::shared_ptr<Tracked>> tracked_;  // QUEUED and RUNNING jobs
  size_t running_ = 0;
  std::mutex submit_mutex_;  // serialises request_id lookups with inserts
  std::atomic<bool> draining_{false};
  std::atomic<bool> closed_{false};
  std::function<void(const std::string&)> before_start_hook_;
  size_t max_active_per_owner_ = 0;
  std::function<void(const v1::JobSpec&)> before_preflight_hook_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_JOB_MANAGER_H_
