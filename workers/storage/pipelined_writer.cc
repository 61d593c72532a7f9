#include "workers/storage/pipelined_writer.h"

#include <algorithm>

namespace modelsmith {

PipelinedWriter::PipelinedWriter(std::unique_ptr<ObjectWriter> inner, uint64_t max_queued_bytes, bool digest_read_back)
    : inner_(std::move(inner)),
      max_queued_bytes_(max_queued_bytes),
      digest_(digest_read_back ? std::make_unique<Sha256Stream>() : nullptr),
      digest_status_(digest_read_back ? absl::OkStatus() : absl::UnimplementedError("read-back digest is off")),
      thread_([this] { Loop(); }) {}

PipelinedWriter::~PipelinedWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
  }
  changed_.notify_all();
  thread_.join();
  inner_->Abort();  // a no-op once committed
}

void PipelinedWriter::Loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Task task = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    const bool failed = !error_.ok();  // after a failure the rest is dropped, not written
    lock.unlock();
    absl::Status status = failed ? absl::OkStatus() : task.run(*inner_);
    if (status.ok() && !failed && digest_status_.ok()) {
      // Re-read what was just written, from the file.
      const uint64_t end = inner_->bytes_written();
      absl::StatusOr<std::unique_ptr<RandomAccessObject>> file = inner_->ReadBack();
      if (!file.ok()) {
        digest_status_ = file.status();
      } else {
        digest_status_ = digest_->UpdateFrom(**file, digested_, end - digested_);
        digested_ = end;
      }
    }
    lock.lock();
    busy_ = false;
    queued_bytes_ -= task.bytes;
    if (!status.ok() && error_.ok()) error_ = status;
    changed_.notify_all();
  }
}

absl::Status PipelinedWriter::Enqueue(Task task) {
  std::unique_lock lock(mutex_);
  // One task may exceed the bound on its own; otherwise wait for room.
  changed_.wait(lock, [&] { return !error_.ok() || queued_bytes_ == 0 || queued_bytes_ + task.bytes <= max_queued_bytes_; });
  if (!error_.ok()) return error_;
  appended_ += task.bytes;
  queued_bytes_ += task.bytes;
  queue_.push_back(std::move(task));
  changed_.notify_all();
  return absl::OkStatus();
}

absl::Status PipelinedWriter::Drain() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return queue_.empty() && !busy_; });
  return error_;
}

absl::Status PipelinedWriter::Append(std::span<const std::byte> data) {
  std::unique_ptr<std::byte[]> copy(new std::byte[data.size()]);
  std::copy(data.begin(), data.end(), copy.get());
  return AppendOwned(std::move(copy), data.size());
}

absl::Status PipelinedWriter::AppendOwned(std::unique_ptr<std::byte[]> data, size_t size) {
  std::shared_ptr<std::byte[]> shared(std::move(data));
  return Enqueue({size, [shared, size](ObjectWriter& out) { return out.Append({shared.get(), size}); }});
}

absl::Status PipelinedWriter::AppendFrom(const RandomAccessObject& source, uint64_t offset, uint64_t length) {
  // A transfer holds no buffer of ours, so it does not count against the queue's memory bound.
  const RandomAccessObject* from = &source;
  Task task{0, [from, offset, length](ObjectWriter& out) { return out.AppendFrom(*from, offset, length); }};
  if (absl::Status s = Enqueue(std::move(task)); !s.ok()) return s;
  appended_ += length;
  return absl::OkStatus();
}

absl::StatusOr<std::string> PipelinedWriter::ReadBackDigest() {
  if (absl::Status s = Drain(); !s.ok()) return s;
  if (!digest_status_.ok()) return digest_status_;
  if (digested_ != appended_) return absl::InternalError("the read-back digest does not cover every byte");
  digest_status_ = absl::FailedPreconditionError("the digest was taken");
  return digest_->FinishHex();
}

absl::StatusOr<std::unique_ptr<RandomAccessObject>> PipelinedWriter::ReadBack() {
  if (absl::Status s = Drain(); !s.ok()) return s;
  return inner_->ReadBack();
}

absl::Status PipelinedWriter::Sync() {
  if (absl::Status s = Drain(); !s.ok()) return s;
  return inner_->Sync();
}

absl::Status PipelinedWriter::Commit() {
  if (absl::Status s = Drain(); !s.ok()) {
    inner_->Abort();
    return s;
  }
  return inner_->Commit();
}

void PipelinedWriter::Abort() {
  {
    std::lock_guard lock(mutex_);
    for (const Task& task : queue_) queued_bytes_ -= task.bytes;
    queue_.clear();
  }
  Drain().IgnoreError();
  inner_->Abort();
}

}  // namespace modelsmith
