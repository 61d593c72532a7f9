// The manager's claim side (JobManager, job_manager.h): start, the claimer that takes queued jobs
// from the store when a worker is free, the listener that wakes it on other replicas' changes, and
// the keeper that renews leases, applies cancel requests from other replicas and sends heartbeats.
#include <algorithm>
#include <climits>

#include "absl/strings/str_cat.h"
#include "server/clock.h"
#include "server/job_manager.h"
#include "server/job_state_events.h"
#include "server/logging.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

// How often a replica looks for work and cancel requests when nothing woke it: on a shared store
// its listener wakes it at once, this is the fallback (a lost connection, a missed wake-up).
constexpr auto kLocalPollInterval = std::chrono::seconds(1);
constexpr auto kHeartbeatInterval = std::chrono::seconds(5);
constexpr double kEventRetentionSeconds = 3600;

}  // namespace

void JobManager::HandToFeed(const std::shared_ptr<Tracked>& tracked) {
  std::lock_guard handover(handover_mutex_);
  {
    std::lock_guard lock(mutex_);
    tracked_.erase(tracked->job.id());
  }
  feed_.Adopt(tracked);
}

void JobManager::LoseLease(Tracked& tracked) {
  if (tracked.lease_lost.exchange(true)) return;
  tracked.changed.notify_all();  // a Cancel waiting on the job stops waiting
  LogWarn(tracked.job.id(), "lost the job's lease to another replica; stopping it without recording anything");
}

absl::Status JobManager::Start() {
  if (!store_.shared()) {
    // One server's store: every lease in it is this server's previous process's.
    if (absl::Status s = store_.ReleaseAllLeases(); !s.ok()) return s;
    // Its jobs that were interrupted once too often end now, before the first request.
    absl::StatusOr<std::vector<v1::Job>> running = store_.ListInState(v1::JOB_STATE_RUNNING);
    if (!running.ok()) return running.status();
    for (const v1::Job& job : *running) {
      if (job.attempt() < kMaxInterruptedAttempts) continue;
      absl::StatusOr<std::optional<ClaimedJob>> claimed =
          store_.ClaimById(job.id(), options_.replica_id, options_.lease_seconds);
      if (!claimed.ok()) return claimed.status();
      if (claimed->has_value()) Accept(**std::move(claimed));
    }
  }
  if (absl::Status s = store_.Heartbeat(options_.replica_id); !s.ok()) return s;
  LogInfo("", absl::StrCat("replica ", options_.replica_id, ", leases of ", options_.lease_seconds, " s"));
  claimer_started_ = true;
  pool_.SetOnSlotFreed([this] { WakeClaimer(); });  // a worker and its memory are free
  claimer_ = std::thread([this] { ClaimLoop(); });
  keeper_ = std::thread([this] { KeepLoop(); });
  if (store_.shared()) listener_ = std::thread([this] { ListenLoop(); });
  return absl::OkStatus();
}

void JobManager::WakeClaimer() {
  {
    std::lock_guard lock(threads_mutex_);
    claim_wanted_ = true;
  }
  threads_changed_.notify_all();
}

void JobManager::ListenLoop() {
  for (;;) {
    {
      std::lock_guard lock(threads_mutex_);
      if (stopping_) return;
    }
    absl::StatusOr<JobStore::Changes> changes = store_.WaitForChange(std::chrono::milliseconds(500));
    if (!changes.ok()) continue;  // waited; the loops poll meanwhile
    if (changes->event) feed_.Poke();
    {
      std::lock_guard lock(threads_mutex_);
      claim_wanted_ |= changes->claimable;
      cancel_wanted_ |= changes->cancel;
    }
    if (changes->claimable || changes->cancel) threads_changed_.notify_all();
  }
}

void JobManager::ClaimLoop() {
  const std::chrono::milliseconds interval = kLocalPollInterval;
  std::unique_lock lock(threads_mutex_);
  while (!stopping_) {
    threads_changed_.wait_for(lock, interval, [&] { return stopping_ || claim_wanted_; });
    claim_wanted_ = false;
    if (stopping_) break;
    lock.unlock();
    while (!draining_ && ClaimOne()) {
    }
    lock.lock();
  }
}

bool JobManager::ClaimOne() {
  // One claimed job waits in the pool at most: the rest stay claimable by replicas with room.
  if (pool_.queued() > 0 || pool_.busy() >= pool_.workers()) return false;
  const uint64_t reserved = pool_.reserved_bytes();
  // Nothing running: any job may start, even one larger than the whole budget (the pool's rule).
  const uint64_t room = pool_.busy() == 0                  ? UINT64_MAX
                        : reserved >= pool_.budget_bytes() ? 0
                                                           : pool_.budget_bytes() - reserved;
  absl::StatusOr<std::optional<ClaimedJob>> claimed =
      store_.ClaimNext(options_.replica_id, options_.lease_seconds, room);
  if (!claimed.ok()) {
    LogError("", absl::StrCat("cannot claim jobs: ", claimed.status().message()));
    return false;
  }
  if (!claimed->has_value()) return false;
  Accept(**std::move(claimed));
  return true;
}

void JobManager::Accept(ClaimedJob claimed) {
  const std::string id = claimed.job.id();
  // Watchers of the job on this replica keep their view: the run happens in it.
  std::unique_lock handover(handover_mutex_);
  std::shared_ptr<Tracked> tracked = feed_.TakeOver(id);
  if (tracked == nullptr) tracked = std::make_shared<Tracked>();
  bool end_now = false;
  {
    std::lock_guard lock(tracked->mutex);
    tracked->job = std::move(claimed.job);
    tracked->lease_token = claimed.token;
    tracked->lease_renewed = std::chrono::steady_clock::now();
    tracked->started = false;
    // A view may be a run this replica lost before: this claim is a new run.
    tracked->lease_lost = false;
    tracked->cancel = false;
    tracked->interrupt = false;
    v1::Job& job = tracked->job;
    if (claimed.cancel_requested) {
      CancelBeforeStart(*tracked);
      end_now = true;
    } else if (job.state() == v1::JOB_STATE_RUNNING) {
      // Its replica died or stalled past the lease (or this server's previous process stopped).
      if (job.attempt() >= kMaxInterruptedAttempts) {
        job.set_state(v1::JOB_STATE_FAILED);
        *job.mutable_error() =
            ErrorOf(MakeError(absl::StatusCode::kAborted, "INTERRUPTED",
                              absl::StrCat("the job's run was interrupted (its server stopped or lost it) ",
                                           job.attempt(), " times; giving up")));
        *job.mutable_end_time() = NowTimestamp();
        AppendEvent(*tracked, StateEvent(job, "failed: interrupted too many times"));
        Persist(*tracked);
        LogWarn(id, "failed: interrupted too many times");
        end_now = true;
      } else {
        job.set_state(v1::JOB_STATE_QUEUED);
        v1::Warning* warning = job.add_warnings();
        warning->set_code("JOB_INTERRUPTED");
        warning->set_message(absl::StrCat("attempt ", job.attempt(),
                                          " was interrupted (its server stopped or lost the job); the job runs again"));
        v1::JobEvent event;
        *event.mutable_warning() = *warning;
        AppendEvent(*tracked, std::move(event));
        LogInfo(id, absl::StrCat("claimed again after attempt ", job.attempt(), " was interrupted"));
      }
    }
  }
  {
    std::lock_guard lock(mutex_);
    tracked_[id] = tracked;
  }
  handover.unlock();
  if (end_now) {
    WakeWatchers(*tracked);
    (void)store_.ReleaseLease(id, tracked->lease_token);
    Finish(tracked);
    return;
  }
  WakeWatchers(*tracked);
  pool_.Submit(id, tracked->job.estimated_peak_bytes(), [this, tracked] { Execute(tracked); });
}

void JobManager::KeepLoop() {
  // Renewals are due every third of a lease; cancel requests are applied when the listener says
  // one came, and looked for at least this often.
  const auto interval = std::chrono::milliseconds(kLocalPollInterval);
  auto last_heartbeat = std::chrono::steady_clock::time_point{};
  auto last_prune = std::chrono::steady_clock::now();
  std::unique_lock lock(threads_mutex_);
  while (!stopping_) {
    threads_changed_.wait_for(lock, interval, [&] { return stopping_ || cancel_wanted_; });
    cancel_wanted_ = false;
    if (stopping_) break;
    lock.unlock();
    RenewLeases();
    ApplyCancelRequests();
    const auto now = std::chrono::steady_clock::now();
    if (now - last_heartbeat >= kHeartbeatInterval) {
      last_heartbeat = now;
      if (absl::Status s = store_.Heartbeat(options_.replica_id); !s.ok()) {
        LogError("", absl::StrCat("heartbeat: ", s.message()));
      }
      ClusterFigures figures;
      absl::StatusOr<ActiveJobCounts> counts = store_.CountActive("");
      absl::StatusOr<int64_t> replicas =
          store_.CountLiveReplicas(3 * std::chrono::duration<double>(kHeartbeatInterval).count());
      if (counts.ok() && replicas.ok()) {
        figures = {counts->queued, counts->running, *replicas};
        std::lock_guard figures_lock(figures_mutex_);
        figures_ = figures;
      }
    }
    if (store_.shared() && now - last_prune >= std::chrono::minutes(10)) {
      last_prune = now;
      (void)store_.PruneEvents(kEventRetentionSeconds);
    }
    lock.lock();
  }
}

void JobManager::RenewLeases() {
  std::vector<std::shared_ptr<Tracked>> held;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, tracked] : tracked_) held.push_back(tracked);
  }
  const auto due = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(options_.lease_seconds / 3));
  for (const std::shared_ptr<Tracked>& tracked : held) {
    std::string id;
    {
      std::lock_guard lock(tracked->mutex);
      if (tracked->ended || tracked->lease_lost) continue;
      if (std::chrono::steady_clock::now() - tracked->lease_renewed < due) continue;
      id = tracked->job.id();
    }
    absl::Status s = store_.RenewLease(id, tracked->lease_token, options_.lease_seconds);
    if (s.ok()) {
      std::lock_guard lock(tracked->mutex);
      tracked->lease_renewed = std::chrono::steady_clock::now();
    } else if (ReasonOf(s) == "LEASE_LOST") {
      LoseLease(*tracked);
    } else {
      LogError(id, absl::StrCat("cannot renew the job's lease: ", s.message()));
    }
  }
}

void JobManager::ApplyCancelRequests() {
  absl::StatusOr<std::vector<std::string>> ids = store_.ListCancelRequested(options_.replica_id);
  if (!ids.ok()) return;
  for (const std::string& id : *ids) {
    std::shared_ptr<Tracked> tracked = Find(id);
    if (tracked == nullptr || tracked->cancel) continue;
    LogInfo(id, "cancel requested through another replica");
    tracked->cancel = true;
    CancelIfUnstarted(tracked);
  }
}

}  // namespace modelsmith
