#include "server/watch_reactor.h"

#include "server/rpc_status.h"

namespace modelsmith {

WatchReactor::WatchReactor(JobManager& manager, const std::string& id) : link_(std::make_shared<Link>()) {
  link_->reactor = this;
  std::weak_ptr<Link> weak = link_;
  absl::StatusOr<std::shared_ptr<JobWatch>> watch = manager.OpenWatch(id, [weak] {
    std::shared_ptr<Link> link = weak.lock();
    if (link == nullptr) return;
    std::lock_guard lock(link->mutex);
    if (link->reactor != nullptr) link->reactor->Pump();
  });
  if (!watch.ok()) {
    std::lock_guard lock(mutex_);
    FinishOnce(ToGrpcStatus(watch.status()));
    return;
  }
  {
    std::lock_guard lock(mutex_);
    watch_ = *std::move(watch);
  }
  Pump();
}

void WatchReactor::Pump() {
  std::unique_lock lock(mutex_);
  if (writing_ || finished_ || watch_ == nullptr) return;
  if (queue_.empty() && !watch_done_) {
    JobWatch::Batch batch = watch_->Take();
    for (v1::JobEvent& event : batch.events) queue_.push_back(std::move(event));
    if (batch.done) {
      watch_done_ = true;
      end_status_ = ToGrpcStatus(batch.status);
    }
  }
  if (!queue_.empty()) {
    writing_event_ = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    lock.unlock();
    StartWrite(&writing_event_);
    return;
  }
  if (watch_done_) FinishOnce(end_status_);
}

void WatchReactor::FinishOnce(grpc::Status status) {
  if (finished_) return;
  finished_ = true;
  if (watch_ != nullptr) watch_->Close();
  Finish(std::move(status));
}

void WatchReactor::OnWriteDone(bool ok) {
  {
    std::lock_guard lock(mutex_);
    writing_ = false;
    if (!ok) {  // the client went away or the call was cancelled
      FinishOnce(grpc::Status::CANCELLED);
      return;
    }
  }
  Pump();
}

void WatchReactor::OnCancel() {
  std::lock_guard lock(mutex_);
  // With a write in flight, its OnWriteDone(false) finishes the stream.
  if (!writing_) FinishOnce(grpc::Status::CANCELLED);
}

void WatchReactor::OnDone() {
  {
    std::lock_guard lock(link_->mutex);
    link_->reactor = nullptr;
  }
  // A thread that called Finish may still be releasing mutex_.
  { std::lock_guard lock(mutex_); }
  if (watch_ != nullptr) watch_->Close();
  delete this;
}

}  // namespace modelsmith
