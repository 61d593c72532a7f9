// JobManager: the job lifecycle on one replica. Submits jobs into the store, claims queued jobs
// from it, runs them on the worker pool, records every state change, serves watchers, and drains
// on shutdown. Any number of replicas may share one store (PostgreSQL); SQLite is one server's.
//
// States: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED; QUEUED -> CANCELLED. A QUEUED or
// RUNNING job holds its output location (recorded in the store with the job); no other job may
// be submitted on an overlapping one, through any replica.
//
// Claims and leases (DESIGN: a job's way through the service). Submit only inserts the job; each
// replica's claimer takes the oldest queued job that fits its free memory whenever a worker is
// free (JobStore::ClaimNext) and holds a lease on it, renewed every third of `lease_seconds`.
// A job whose lease expired while RUNNING (its replica died or stalled) is claimed again: it runs
// again as the next attempt, or is FAILED (reason INTERRUPTED) once 3 attempts were interrupted.
// A job interrupted by shutdown goes back to QUEUED and its lease is released, so another
// replica takes it at once.
//
// Fencing. Every write about a running job carries the lease's token and is refused once another
// replica has claimed the job (LEASE_LOST): the old run stops, records nothing, and the job's
// watchers here follow the new run. Before its first commit and again before its manifest, a run
// renews its lease (JobContext::ConfirmStillOwner). What remains is a window of one lease: a
// replica that renewed and is then paused for longer than `lease_seconds` before its rename or
// manifest write lands can still write after another replica took the job over. A reader never
// sees a partial or mixed output even then: outputs are deterministic (the same spec and input
// give the same bytes), every artifact is committed whole (rename, or S3's complete), the
// manifest is written last and replaced whole, and the run that took over replaces whatever the
// old one left (a rerun's leftovers are its own).
//
// Sources: job_manager.cc (submit, run, get, list, watch, drain), job_claims.cc (start, claims,
// leases, heartbeats, wake-ups), job_cancel.cc (cancel here or through the store).
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
#include <thread>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job_service.pb.h"
#include "server/job_store.h"
#include "server/job_watch.h"
#include "server/metrics.h"
#include "server/remote_job_feed.h"
#include "workers/jobs/job_kinds.h"
#include "workers/pool/worker_pool.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

inline constexpr uint32_t kMaxInterruptedAttempts = 3;

struct JobManagerOptions {
  // Paces every job's data movement (0: unlimited).
  uint64_t io_bytes_per_second = 0;
  // This replica's name in leases and heartbeats; unique among the replicas of a store.
  // Empty: "<hostname>-<pid>".
  std::string replica_id;
  // How long a claim lasts without renewal; renewed every third of it.
  double lease_seconds = 30;
};

// The store-wide figures the metrics show (the same on every replica), as of the last refresh.
struct ClusterFigures {
  int64_t queued = 0;
  int64_t running = 0;
  int64_t replicas = 0;  // replicas with a heartbeat in the last 3 heartbeat intervals
};

class JobManager {
 public:
  // `metrics` may be null.
  JobManager(JobStore& store, const StorageRouter& router, WorkerPool& pool, Metrics* metrics,
             JobManagerOptions options = {});
  ~JobManager();

  // Starts claiming jobs (and, on a store one server owns, first ends the leases its previous
  // process held, so that the jobs it ran run again at once). Call once before serving.
  absl::Status Start();

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

  // QUEUED: CANCELLED at once. RUNNING (on any replica): asks it to stop and waits up to a few
  // seconds for it to end. Ended: FAILED_PRECONDITION (JOB_ALREADY_ENDED).
  absl::StatusOr<v1::Job> Cancel(const std::string& id);

  // Opens a watch on job `id` (NOT_FOUND when there is none). Its first batch holds the job as it
  // is now and each warning raised so far; then each change until the job ends, then the final
  // job. `wake` is called, from any thread and with no lock of the manager held, whenever new
  // events can be taken; it must not block. See JobWatch.
  absl::StatusOr<std::shared_ptr<JobWatch>> OpenWatch(const std::string& id, std::function<void()> wake);

  // Refuses new submits and claims nothing more from now on.
  void BeginDrain();
  // Waits until no job runs or `grace` passes; true if none runs.
  bool WaitForRunning(std::chrono::milliseconds grace);
  // Stops running jobs (they return to QUEUED, their leases released for another replica or the
  // next process) and waits for them.
  void InterruptRunning();
  // Releases the leases of claimed jobs that never started, forgets this replica's heartbeat,
  // stops the background threads, and wakes and ends every watcher. Call after the pool's
  // Shutdown.
  void Close();

  // Jobs running on this replica.
  size_t running() const;
  const std::string& replica_id() const { return options_.replica_id; }
  ClusterFigures cluster_figures() const;

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
  // Cancels a claimed job that has not started, hands back its lease and forgets it; false (and
  // nothing done) once it has started or ended.
  bool CancelIfUnstarted(const std::shared_ptr<Tracked>& tracked);

  // The claimer thread: claims what fits while a worker is free.
  void ClaimLoop();
  // Claims one job if one fits; false when none was claimed.
  bool ClaimOne();
  // Takes a claimed job on: runs it, or ends it (cancel requested, too many interruptions).
  void Accept(ClaimedJob claimed);
  // The keeper thread: lease renewals, cancel requests from other replicas, heartbeats, figures.
  void KeepLoop();
  // The listener thread (shared store): wakes the claimer, the keeper and the feed when another
  // replica queues a job, releases a lease, asks for a cancel or appends an event.
  void ListenLoop();
  void RenewLeases();
  void ApplyCancelRequests();
  // The job is another replica's now: stop it and write nothing more about it.
  void LoseLease(Tracked& tracked);
  // Forgets a job this replica no longer holds; its watchers here follow it through the feed.
  void HandToFeed(const std::shared_ptr<Tracked>& tracked);

  void Execute(const std::shared_ptr<Tracked>& tracked);
  // REQUIRES: tracked->mutex held. Appends an event and wakes watchers.
  void AppendEvent(Tracked& tracked, v1::JobEvent event);
  // Writes the events appended so far to a shared store, in order. REQUIRES: tracked.mutex not held.
  void FlushEvents(Tracked& tracked);
  // Records `tracked`'s job under its lease. REQUIRES: tracked.mutex held.
  void Persist(Tracked& tracked);
  // Calls every watcher's wake function (after writing pending events). REQUIRES: tracked.mutex
  // not held.
  void WakeWatchers(Tracked& tracked);
  void Finish(const std::shared_ptr<Tracked>& tracked);
  std::shared_ptr<Tracked> Find(const std::string& id) const;
  // Cancels a job this replica does not hold: claims it if nobody does, else asks its holder.
  absl::StatusOr<v1::Job> CancelElsewhere(const std::string& id);
  void WakeClaimer();

  JobStore& store_;
  const StorageRouter& router_;
  WorkerPool& pool_;
  Metrics* metrics_;
  JobManagerOptions options_;

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

  RemoteJobFeed feed_;
  // Held while a job passes between the feed's views and tracked_ (a claim, a watch opening).
  std::mutex handover_mutex_;
  mutable std::mutex figures_mutex_;
  ClusterFigures figures_;
  std::mutex threads_mutex_;  // guards the flags below and pairs with threads_changed_
  std::condition_variable threads_changed_;
  bool claim_wanted_ = false;
  bool cancel_wanted_ = false;
  bool stopping_ = false;
  bool claimer_started_ = false;
  std::thread claimer_;
  std::thread keeper_;
  std::thread listener_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_JOB_MANAGER_H_
