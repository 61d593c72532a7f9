// RemoteJobFeed: live views of jobs this replica does not run (queued, or running on another
// replica), fed from the job store, so that WatchJob on any replica streams any job.
//
// One view per job, shared by all of this replica's watchers of it: a TrackedJob like the one a
// running job has, so JobWatch serves both alike. One thread polls the store for every viewed job
// each `poll_interval`: the events the running replica appended (state changes, warnings, log
// lines) and the stored job (its progress, written a few times a second). The view ends when the
// stored job ends; a view nobody watches any more is dropped.
//
// Handing over: when this replica claims a job it has a view of, TakeOver hands the view to the
// manager, which runs the job in it (its watchers see the run without a seam); when this replica
// loses a job's lease, Adopt turns its record into a view again.
// Thread-safe.
#ifndef MODELSMITH_SERVER_REMOTE_JOB_FEED_H_
#define MODELSMITH_SERVER_REMOTE_JOB_FEED_H_

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/job_store.h"
#include "server/tracked_job.h"

namespace modelsmith {

class RemoteJobFeed {
 public:
  RemoteJobFeed(JobStore& store, std::chrono::milliseconds poll_interval);
  ~RemoteJobFeed();

  // The view of job `id`, or null when the stored job has ended (serve the stored job then).
  // NOT_FOUND when there is no such job.
  absl::StatusOr<std::shared_ptr<TrackedJob>> View(const std::string& id);

  // Removes and returns the view of `id`, if there is one.
  std::shared_ptr<TrackedJob> TakeOver(const std::string& id);

  // Feeds `tracked` from the store from now on.
  void Adopt(std::shared_ptr<TrackedJob> tracked);

  // Polls now rather than at the next interval (an event was appended somewhere).
  void Poke();

  // Stops polling; views stay as they are. Idempotent.
  void Stop();

 private:
  struct Mirror {
    std::shared_ptr<TrackedJob> tracked;
    int64_t after = 0;        // the last store event applied
    int unwatched_polls = 0;  // consecutive polls with no watcher
  };

  void Run();
  // Applies what the store has for `mirror`; false when the view is done with (ended or unwatched).
  bool Poll(Mirror& mirror);

  JobStore& store_;
  const std::chrono::milliseconds poll_interval_;
  std::mutex mutex_;
  std::condition_variable stop_changed_;
  std::map<std::string, Mirror> mirrors_;
  bool stopping_ = false;
  bool poked_ = false;
  std::thread thread_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_REMOTE_JOB_FEED_H_
