// JobManager: the job lifecycle. Submits jobs into the store and the worker pool, runs them,
// records every state change, serves watchers, recovers after a restart and drains on shutdown.
//
// States: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED; QUEUED -> CANCELLED. A RUNNING job
// interrupted by shutdown goes back to QUEUED and runs again after restart; one found RUNNING at
// startup (the process died) is queued again with attempt+1, and FAILED (reason INTERRUPTED) once
// it has been interrupted 3 times.
// Thread-safe.
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
#include "server/metrics.h"
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
  // spec that cannot run; ALREADY_EXISTS (REQUEST_ID_REUSED) for a request_id used with another
  // spec; UNAVAILABLE (SHUTTING_DOWN) while draining.
  absl::StatusOr<v1::Job> Submit(const v1::JobSpec& spec, const std::string& request_id);

  absl::StatusOr<v1::Job> Get(const std::string& id);

  absl::StatusOr<v1::ListJobsResponse> List(const v1::ListJobsRequest& request);

  // QUEUED: CANCELLED at once. RUNNING: asks it to stop and waits up to a few seconds for it to
  // end. Ended: FAILED_PRECONDITION (JOB_ALREADY_ENDED).
  absl::StatusOr<v1::Job> Cancel(const std::string& id);

  // Calls `send` with the job as it is now, then with each warning it has raised so far, then
  // with each change until the job ends, then with the final job. Progress may be coalesced; state changes and warnings never are. Returns when
  // the job has ended, when `send` returns false, when `still_wanted` returns false (polled), or
  // with UNAVAILABLE when the manager closes.
  absl::Status Watch(const std::string& id, const std::function<bool(const v1::JobEvent&)>& send,
                     const std::function<bool()>& still_wanted);

  // Refuses new submits from now on.
  void BeginDrain();
  // Waits until no job runs or `grace` passes; true if none runs.
  bool WaitForRunning(std::chrono::milliseconds grace);
  // Stops running jobs (they return to QUEUED for the next process) and waits for them.
  void InterruptRunning();
  // Wakes and ends every watcher.
  void Close();

  size_t running() const;

 private:
  struct Tracked;
  class Context;

  void Schedule(const std::shared_ptr<Tracked>& tracked);
  void Execute(const std::shared_ptr<Tracked>& tracked);
  // REQUIRES: tracked->mutex held. Appends an event and wakes watchers.
  void AppendEvent(Tracked& tracked, v1::JobEvent event);
  void Persist(const v1::Job& job);
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
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_JOB_MANAGER_H_
