// The manager's cancel path (JobManager, job_manager.h): a job this replica holds is cancelled
// here (before it starts) or asked to stop; one it does not hold is claimed and cancelled if
// nobody holds it, else its holder is asked through the store.
#include <thread>

#include "absl/strings/str_cat.h"
#include "server/clock.h"
#include "server/job_manager.h"
#include "server/job_state_events.h"
#include "server/logging.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

constexpr auto kCancelWait = std::chrono::seconds(5);

}  // namespace

void JobManager::CancelBeforeStart(Tracked& tracked) {
  v1::Job& job = tracked.job;
  job.set_state(v1::JOB_STATE_CANCELLED);
  *job.mutable_error() = ErrorOf(MakeError(absl::StatusCode::kCancelled, "CANCELLED", "cancelled by request"));
  *job.mutable_end_time() = NowTimestamp();
  AppendEvent(tracked, StateEvent(job, "cancelled before it started"));
  Persist(tracked);
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& id) {
  std::shared_ptr<Tracked> tracked = Find(id);
  if (tracked == nullptr) return CancelElsewhere(id);
  {
    // A job that has just ended can still be tracked for a moment (until Finish forgets it).
    std::lock_guard lock(tracked->mutex);
    if (tracked->ended) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "JOB_ALREADY_ENDED",
                       absl::StrCat("job ", id, " already ended (", v1::JobState_Name(tracked->job.state()), ")"),
                       {{"job_id", id}});
    }
  }
  if (!CancelIfUnstarted(tracked)) {
    tracked->cancel = true;
    LogInfo(id, "cancel requested");
    std::unique_lock lock(tracked->mutex);
    tracked->changed.wait_for(lock, kCancelWait, [&] { return tracked->ended || tracked->lease_lost.load(); });
  }
  std::lock_guard lock(tracked->mutex);
  return tracked->job;
}

bool JobManager::CancelIfUnstarted(const std::shared_ptr<Tracked>& tracked) {
  {
    std::lock_guard lock(tracked->mutex);
    // Claimed and waiting in the pool, or admitted and not yet started: it never runs now.
    if (tracked->started || tracked->ended) return false;
    CancelBeforeStart(*tracked);
  }
  const std::string id = tracked->job.id();
  pool_.RemoveQueued(id);  // frees its place in the pool's queue, if it is still there
  LogInfo(id, "cancelled before it started");
  WakeWatchers(*tracked);
  (void)store_.ReleaseLease(id, tracked->lease_token);
  Finish(tracked);
  return true;
}

absl::StatusOr<v1::Job> JobManager::CancelElsewhere(const std::string& id) {
  auto already_ended = [&](const v1::Job& job) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "JOB_ALREADY_ENDED",
                     absl::StrCat("job ", id, " already ended (", v1::JobState_Name(job.state()), ")"),
                     {{"job_id", id}});
  };
  absl::StatusOr<v1::Job> job = Get(id);
  if (!job.ok()) return job.status();
  if (IsTerminal(job->state())) return already_ended(*job);
  // Nobody holds it (queued, or its replica died): take it and end it here.
  absl::StatusOr<std::optional<ClaimedJob>> claimed = store_.ClaimById(id, options_.replica_id, options_.lease_seconds);
  if (!claimed.ok()) return claimed.status();
  if (claimed->has_value()) {
    std::unique_lock handover(handover_mutex_);
    std::shared_ptr<Tracked> tracked = feed_.TakeOver(id);
    if (tracked == nullptr) tracked = std::make_shared<Tracked>();
    {
      std::lock_guard lock(tracked->mutex);
      tracked->job = std::move((*claimed)->job);
      tracked->lease_token = (*claimed)->token;
      tracked->started = false;
      tracked->lease_lost = false;
      CancelBeforeStart(*tracked);
    }
    {
      std::lock_guard lock(mutex_);
      tracked_[id] = tracked;
    }
    handover.unlock();
    LogInfo(id, "cancelled before it started");
    WakeWatchers(*tracked);
    (void)store_.ReleaseLease(id, tracked->lease_token);
    Finish(tracked);
    std::lock_guard lock(tracked->mutex);
    return tracked->job;
  }
  // A replica holds it (this one's claimer may have just taken it): ask, and wait for the end.
  if (absl::Status s = store_.RequestCancel(id); !s.ok()) return s;
  LogInfo(id, "cancel requested from the replica that holds the job");
  ApplyCancelRequests();
  const auto deadline = std::chrono::steady_clock::now() + kCancelWait;
  while (std::chrono::steady_clock::now() < deadline) {
    job = Get(id);
    if (!job.ok() || IsTerminal(job->state())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return job;
}

}  // namespace modelsmith
