// PipelinedWriter: an ObjectWriter that hands its appends to a background thread, so a job can
// compute its next bytes while the previous ones are being written (the write into the page
// cache, or an S3 part upload, costs about as much as quantizing them).
//
// Appends run on the thread in the order they were made. At most `max_queued_bytes` of appended
// data wait at once; Append blocks beyond that, which bounds memory. An error of a queued append
// is returned by the next call, and every call after it fails too. ReadBack, Sync and Commit wait
// for the queue to drain first. Like every ObjectWriter it has one producer.
//
// With kDigest, the writer thread also re-reads each range right after writing it
// (through the inner writer's ReadBack, so from the file, not from our buffers) and feeds it to
// a SHA-256: a job gets the checksum of what is really in the file without a second pass after
// the last byte. Stores that cannot read back before commit (S3) give no digest.
//
// With kCompare, the writer thread instead compares each range it re-reads with the bytes it was
// given (a mismatch is DATA_LOSS, VERIFY_MISMATCH), and the SHA-256 is taken from those bytes on
// the appending thread, which keeps the two threads' work about even: equal bytes, equal digest.
// A transfer (AppendFrom) is then read into memory by the producer, hashed, and written from
// there: the bytes have to pass through memory to be compared anyway, and writing them from that
// buffer costs less than a second, in-kernel copy from the source.
#ifndef MODELSMITH_WORKERS_STORAGE_PIPELINED_WRITER_H_
#define MODELSMITH_WORKERS_STORAGE_PIPELINED_WRITER_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "workers/storage/buffer_pool.h"
#include "workers/storage/checksum.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

class PipelinedWriter final : public ObjectWriter {
 public:
  enum class ReadBackCheck { kOff, kDigest, kCompare };

  PipelinedWriter(std::unique_ptr<ObjectWriter> inner, uint64_t max_queued_bytes,
                  ReadBackCheck read_back = ReadBackCheck::kOff);
  ~PipelinedWriter() override;

  const std::string& uri() const override { return inner_->uri(); }
  // Copies `data` into the queue.
  absl::Status Append(std::span<const std::byte> data) override;
  // Queues the first `size` bytes of `data` without copying them.
  absl::Status AppendOwned(std::unique_ptr<std::byte[]> data, size_t size);
  // The same for a buffer from TakeBuffer (or any shared one the caller no longer writes to).
  absl::Status AppendShared(std::shared_ptr<std::byte[]> data, size_t size);
  // A buffer of at least `size` bytes to fill and pass to AppendShared; it goes back to a pool of
  // this writer's once written, so a stream of pieces reuses a few buffers instead of faulting in
  // fresh pages for each (which cost more than writing them). Thread-safe.
  std::shared_ptr<std::byte[]> TakeBuffer(size_t size) { return pool_.Take(size); }
  // Queues the transfer; `source` must outlive it (until the next Sync, ReadBack or Commit).
  absl::Status AppendFrom(const RandomAccessObject& source, uint64_t offset, uint64_t length) override;
  // Everything appended, queued or not.
  uint64_t bytes_written() const override { return appended_; }
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> ReadBack() override;
  absl::Status Sync() override;
  absl::Status Commit() override;
  void Abort() override;

  // Drains the queue, ends the writer thread and hands back the inner writer, uncommitted, for
  // the caller to commit later (a job publishes all its artifacts together). On a queued append's
  // error the inner writer is aborted and the error returned. Nothing but the destructor may be
  // called afterwards.
  absl::StatusOr<std::unique_ptr<ObjectWriter>> Release();

  // After the queue drains: the SHA-256 (hex) of every byte read back from the file (kCompare:
  // of every byte appended, each compared equal to what the file holds), or UNIMPLEMENTED when
  // reading back was off or the store cannot read before commit.
  absl::StatusOr<std::string> ReadBackDigest();

  // After the queue drains (ReadBack, Sync, Commit): the bytes the writer thread re-read and
  // found equal to what it was given (kCompare); less than bytes_written() when the store cannot
  // read back before commit.
  uint64_t compared_bytes() const { return compared_; }

 private:
  struct Task {
    uint64_t bytes;
    std::function<absl::Status(ObjectWriter&)> run;
    std::shared_ptr<std::byte[]> data;  // kCompare: what the range must hold
    uint64_t size = 0;
  };

  // kCompare: a transfer is read by the producer in pieces of this size.
  static constexpr uint64_t kTransferPieceBytes = 4 << 20;
  // Enough for what the queue holds, one piece on the writer thread and one being filled.
  static constexpr size_t kSpareBuffers = 6;

  absl::Status Enqueue(Task task);
  // Waits until the queue is empty; returns the first error of a queued append.
  absl::Status Drain();
  void Loop();

  // The writer thread's check of what `task` just wrote at [begin, ...).
  absl::Status CheckWritten(const Task& task, uint64_t begin);

  BufferPool pool_{kSpareBuffers};

  std::unique_ptr<ObjectWriter> inner_;
  const uint64_t max_queued_bytes_;
  const ReadBackCheck read_back_;
  uint64_t appended_ = 0;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Task> queue_;
  uint64_t queued_bytes_ = 0;
  bool busy_ = false;
  bool stopping_ = false;
  absl::Status error_;
  // Owned by the writer thread while it runs; read after Drain.
  std::unique_ptr<Sha256Stream> digest_;
  uint64_t digested_ = 0;
  uint64_t compared_ = 0;  // written by the writer thread, read after a drain
  absl::Status digest_status_;
  std::thread thread_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_PIPELINED_WRITER_H_
