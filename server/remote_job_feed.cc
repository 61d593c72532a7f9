#include "server/remote_job_feed.h"

#include <functional>
#include <utility>
#include <vector>

#include "google/protobuf/util/time_util.h"
#include "server/clock.h"

namespace modelsmith {
namespace {

constexpr int kEventsPerPoll = 500;
constexpr int kUnwatchedPollsBeforeDrop = 3;

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED;
}

void WakeAll(TrackedJob& tracked) {
  std::vector<std::function<void()>> wakers;
  {
    std::lock_guard lock(tracked.mutex);
    for (const auto& [number, wake] : tracked.wakers) wakers.push_back(wake);
  }
  for (const std::function<void()>& wake : wakers) wake();
}

}  // namespace

RemoteJobFeed::RemoteJobFeed(JobStore& store, std::chrono::milliseconds poll_interval)
    : store_(store), poll_interval_(poll_interval), thread_([this] { Run(); }) {}

RemoteJobFeed::~RemoteJobFeed() { Stop(); }

void RemoteJobFeed::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_changed_.notify_all();
  if (thread_.joinable()) thread_.join();
  // Wake every watcher once more, so that each sees the server closing.
  std::vector<std::shared_ptr<TrackedJob>> views;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, mirror] : mirrors_) views.push_back(mirror.tracked);
  }
  for (const std::shared_ptr<TrackedJob>& view : views) WakeAll(*view);
}

void RemoteJobFeed::Poke() {
  {
    std::lock_guard lock(mutex_);
    if (mirrors_.empty()) return;
    poked_ = true;
  }
  stop_changed_.notify_all();
}

absl::StatusOr<std::shared_ptr<TrackedJob>> RemoteJobFeed::View(const std::string& id) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = mirrors_.find(id); it != mirrors_.end()) return it->second.tracked;
  }
  // The events before the job is read are in the job already; those after are applied.
  absl::StatusOr<int64_t> after = store_.LastEventSeq(id);
  if (!after.ok()) return after.status();
  absl::StatusOr<v1::Job> job = store_.Get(id);
  if (!job.ok()) return job.status();
  if (IsTerminal(job->state())) return nullptr;
  auto tracked = std::make_shared<TrackedJob>();
  tracked->job = *std::move(job);
  tracked->remote = true;
  tracked->started = tracked->job.state() == v1::JOB_STATE_RUNNING;
  std::lock_guard lock(mutex_);
  auto [it, inserted] = mirrors_.try_emplace(id, Mirror{tracked, *after, 0});
  return it->second.tracked;  // a concurrent View of the same job may have won: share its view
}

std::shared_ptr<TrackedJob> RemoteJobFeed::TakeOver(const std::string& id) {
  std::shared_ptr<TrackedJob> tracked;
  {
    std::lock_guard lock(mutex_);
    auto it = mirrors_.find(id);
    if (it == mirrors_.end()) return nullptr;
    tracked = std::move(it->second.tracked);
    mirrors_.erase(it);
  }
  std::lock_guard lock(tracked->mutex);
  tracked->remote = false;  // a poll under way leaves it alone from now on
  return tracked;
}

void RemoteJobFeed::Adopt(std::shared_ptr<TrackedJob> tracked) {
  int64_t after = 0;
  std::string id;
  {
    std::lock_guard lock(tracked->mutex);
    tracked->remote = true;
    id = tracked->job.id();
  }
  // Everything this replica wrote is in the view already; the events of the run that took over
  // may not be yet, so start after the last one this view could have seen only approximately:
  // the store's latest event before now. A watcher may then miss a log line written in between.
  if (absl::StatusOr<int64_t> last = store_.LastEventSeq(id); last.ok()) after = *last;
  std::lock_guard lock(mutex_);
  mirrors_[id] = Mirror{std::move(tracked), after, 0};
}

void RemoteJobFeed::Run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    stop_changed_.wait_for(lock, poll_interval_, [&] { return stopping_ || poked_; });
    poked_ = false;
    if (stopping_) break;
    std::vector<std::pair<std::string, Mirror>> work(mirrors_.begin(), mirrors_.end());
    lock.unlock();
    std::vector<std::pair<std::string, bool>> outcome;
    for (auto& [id, mirror] : work) outcome.emplace_back(id, Poll(mirror));
    lock.lock();
    for (size_t i = 0; i < work.size(); ++i) {
      auto it = mirrors_.find(work[i].first);
      if (it == mirrors_.end() || it->second.tracked != work[i].second.tracked) continue;  // taken over
      if (!outcome[i].second) {
        mirrors_.erase(it);
      } else {
        it->second.after = work[i].second.after;
        it->second.unwatched_polls = work[i].second.unwatched_polls;
      }
    }
  }
}

bool RemoteJobFeed::Poll(Mirror& mirror) {
  TrackedJob& tracked = *mirror.tracked;
  {
    std::lock_guard lock(tracked.mutex);
    if (!tracked.remote) return false;
    mirror.unwatched_polls = tracked.wakers.empty() ? mirror.unwatched_polls + 1 : 0;
    if (mirror.unwatched_polls >= kUnwatchedPollsBeforeDrop) return false;
  }
  absl::StatusOr<v1::Job> job = store_.Get(tracked.job.id());
  absl::StatusOr<std::vector<std::pair<int64_t, v1::JobEvent>>> events =
      job.ok() ? store_.ListEvents(job->id(), mirror.after, kEventsPerPoll) : job.status();
  if (!events.ok()) return true;  // the store is unreachable for now: try again next poll
  bool ended = false;
  {
    std::lock_guard lock(tracked.mutex);
    if (!tracked.remote) return false;
    bool state_event = false;
    for (auto& [seq, event] : *events) {
      mirror.after = seq;
      if (event.has_progress()) continue;  // progress comes with the stored job
      state_event = state_event || event.has_state_change();
      tracked.events.emplace_back(++tracked.seq, std::move(event));
    }
    if (!state_event && (job->state() != tracked.job.state() || job->attempt() != tracked.job.attempt())) {
      // A store without events (one server's), or an event not written yet: the change itself.
      v1::JobEvent change;
      *change.mutable_time() = NowTimestamp();
      change.mutable_state_change()->set_state(job->state());
      change.mutable_state_change()->set_attempt(job->attempt());
      if (job->has_error()) *change.mutable_state_change()->mutable_error() = job->error();
      tracked.events.emplace_back(++tracked.seq, std::move(change));
    }
    const bool progressed = job->progress().SerializeAsString() != tracked.job.progress().SerializeAsString();
    tracked.job = *std::move(job);
    tracked.started = tracked.job.state() == v1::JOB_STATE_RUNNING || tracked.started;
    if (progressed) tracked.progress_seq = ++tracked.seq;
    // End once the stored job has ended and a poll found no event left to apply (the final
    // state is stored just before its event is appended; a watcher gets the final job anyway).
    ended = IsTerminal(tracked.job.state()) && events->empty();
    if (ended) tracked.ended = true;
    tracked.changed.notify_all();
  }
  WakeAll(tracked);
  return !ended;
}

}  // namespace modelsmith
