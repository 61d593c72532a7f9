#include "workers/storage/pipelined_writer.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {

PipelinedWriter::PipelinedWriter(std::unique_ptr<ObjectWriter> inner, uint64_t max_queued_bytes,
                                 ReadBackCheck read_back)
    : inner_(std::move(inner)),
      max_queued_bytes_(max_queued_bytes),
      read_back_(read_back),
      digest_(read_back != ReadBackCheck::kOff ? std::make_unique<Sha256Stream>() : nullptr),
      digest_status_(read_back != ReadBackCheck::kOff ? absl::OkStatus()
                                                      : absl::UnimplementedError("read-back digest is off")),
      thread_([this] { Loop(); }) {}

PipelinedWriter::~PipelinedWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (inner_ != nullptr) inner_->Abort();  // a no-op once committed
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
    const uint64_t begin = inner_->bytes_written();
    absl::Status status = failed ? absl::OkStatus() : task.run(*inner_);
    if (status.ok() && !failed && read_back_ == ReadBackCheck::kCompare && digest_status_.ok()) {
      status = CheckWritten(task, begin);
    } else if (status.ok() && !failed && digest_status_.ok()) {
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

absl::Status PipelinedWriter::CheckWritten(const Task& task, uint64_t begin) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> file = inner_->ReadBack();
  if (!file.ok()) {
    // The store cannot read before commit (S3): no digest, and the job verifies after commit.
    digest_status_ = file.status();
    return absl::OkStatus();
  }
  constexpr uint64_t kPiece = 1 << 20;
  std::vector<std::byte> piece(std::min<uint64_t>(kPiece, task.size));
  for (uint64_t done = 0; done < task.size;) {
    const uint64_t n = std::min<uint64_t>(kPiece, task.size - done);
    if (absl::Status s = (*file)->ReadAt(begin + done, n, piece.data()); !s.ok()) return s;
    if (std::memcmp(piece.data(), task.data.get() + done, n) != 0) {
      return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                       absl::StrCat("'", inner_->uri(), "' read back differs from what was written, within bytes [",
                                    begin + done, ", +", n, ")"));
    }
    done += n;
  }
  compared_ += task.size;
  return absl::OkStatus();
}

absl::Status PipelinedWriter::Enqueue(Task task) {
  std::unique_lock lock(mutex_);
  // One task may exceed the bound on its own; otherwise wait for room.
  changed_.wait(lock,
                [&] { return !error_.ok() || queued_bytes_ == 0 || queued_bytes_ + task.bytes <= max_queued_bytes_; });
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
  return AppendShared(std::shared_ptr<std::byte[]>(std::move(data)), size);
}

absl::Status PipelinedWriter::AppendShared(std::shared_ptr<std::byte[]> data, size_t size) {
  auto write = [data, size](ObjectWriter& out) { return out.Append({data.get(), size}); };
  if (read_back_ == ReadBackCheck::kCompare) {
    // Hashed here, in append order; the writer thread proves the file holds the same bytes.
    digest_->Update(data.get(), size);
    digested_ += size;
    return Enqueue({size, std::move(write), data, size});
  }
  return Enqueue({size, std::move(write), nullptr, 0});
}

absl::Status PipelinedWriter::AppendFrom(const RandomAccessObject& source, uint64_t offset, uint64_t length) {
  if (read_back_ == ReadBackCheck::kCompare) {
    for (uint64_t done = 0; done < length;) {
      const uint64_t n = std::min(kTransferPieceBytes, length - done);
      std::shared_ptr<std::byte[]> data = TakeBuffer(n);
      if (absl::Status s = source.ReadAt(offset + done, n, data.get()); !s.ok()) return s;
      if (absl::Status s = AppendShared(std::move(data), n); !s.ok()) return s;
      done += n;
    }
    return absl::OkStatus();
  }
  // A transfer holds no buffer of ours, so it does not count against the queue's memory bound.
  const RandomAccessObject* from = &source;
  Task task{0, [from, offset, length](ObjectWriter& out) { return out.AppendFrom(*from, offset, length); }, nullptr, 0};
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

absl::StatusOr<std::unique_ptr<ObjectWriter>> PipelinedWriter::Release() {
  if (absl::Status s = Drain(); !s.ok()) {
    inner_->Abort();
    return s;
  }
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
  return std::move(inner_);
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
