#include "server/job_watch.h"

#include <algorithm>

#include "google/protobuf/util/time_util.h"
#include "server/clock.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

using google::protobuf::util::TimeUtil;

v1::JobEvent JobEvent(v1::Job job) {
  v1::JobEvent event;
  *event.mutable_time() = NowTimestamp();
  *event.mutable_job() = std::move(job);
  return event;
}

}  // namespace

std::shared_ptr<JobWatch> JobWatch::OfEnded(v1::Job job) {
  std::shared_ptr<JobWatch> watch(new JobWatch(nullptr, nullptr));
  watch->first_.push_back(JobEvent(std::move(job)));
  return watch;
}

std::shared_ptr<JobWatch> JobWatch::OfLive(std::shared_ptr<TrackedJob> tracked, std::function<void()> wake,
                                           const std::atomic<bool>& closed) {
  std::shared_ptr<JobWatch> watch(new JobWatch(std::move(tracked), &closed));
  TrackedJob& t = *watch->tracked_;
  std::lock_guard lock(t.mutex);
  v1::JobEvent first = JobEvent(t.job);
  // Warnings raised before this watcher came are replayed, so every watcher sees each one as an
  // event whenever it attached.
  for (const v1::Warning& warning : t.job.warnings()) {
    v1::JobEvent replay;
    *replay.mutable_time() = first.time();
    *replay.mutable_warning() = warning;
    watch->first_.push_back(std::move(replay));
  }
  watch->first_.insert(watch->first_.begin(), std::move(first));
  watch->cursor_ = t.seq;
  watch->waker_ = t.next_waker++;
  t.wakers.emplace(watch->waker_, std::move(wake));
  watch->registered_ = true;
  return watch;
}

JobWatch::~JobWatch() { Close(); }

void JobWatch::Close() {
  if (tracked_ == nullptr) return;
  std::lock_guard lock(tracked_->mutex);
  if (registered_) tracked_->wakers.erase(waker_);
  registered_ = false;
}

JobWatch::Batch JobWatch::Take() {
  Batch batch;
  batch.events = std::move(first_);
  first_.clear();
  if (done_) {
    batch.done = true;
    return batch;
  }
  if (tracked_ == nullptr) {  // an ended job: the one event above is all
    done_ = batch.done = true;
    return batch;
  }
  std::vector<std::pair<uint64_t, v1::JobEvent>> fresh;
  std::optional<v1::Job> final_job;
  {
    std::lock_guard lock(tracked_->mutex);
    for (auto it = tracked_->events.rbegin(); it != tracked_->events.rend() && it->first > cursor_; ++it) {
      fresh.push_back(*it);
    }
    if (tracked_->progress_seq > cursor_) {
      v1::JobEvent progress;
      *progress.mutable_time() = NowTimestamp();
      *progress.mutable_progress() = tracked_->job.progress();
      fresh.emplace_back(tracked_->progress_seq, std::move(progress));
    }
    cursor_ = tracked_->seq;
    if (tracked_->ended) {
      final_job = tracked_->job;
    } else if (closed_ != nullptr && *closed_) {
      batch.status = MakeError(absl::StatusCode::kUnavailable, "SHUTTING_DOWN", "the server is shutting down");
      done_ = batch.done = true;
    }
  }
  std::sort(fresh.begin(), fresh.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [seq, event] : fresh) batch.events.push_back(std::move(event));
  if (final_job) {
    batch.events.push_back(JobEvent(*std::move(final_job)));
    done_ = batch.done = true;
  }
  if (batch.done) Close();
  return batch;
}

}  // namespace modelsmith
