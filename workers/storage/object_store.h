// ObjectStore: the one interface for every byte Modelsmith reads or writes, shaped so that both
// a filesystem and S3 can implement it (LevelDB's Env is the model).
//
// Objects are named by URIs: an absolute path "/a/b/model.safetensors" for the local store,
// "s3://bucket/key" for S3. A "prefix" is a directory locally and a key prefix on S3.
// All methods are safe for concurrent use unless stated otherwise.
#ifndef MODELSMITH_WORKERS_STORAGE_OBJECT_STORE_H_
#define MODELSMITH_WORKERS_STORAGE_OBJECT_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace modelsmith {

// A readable object. Thread-safe: ReadAt may be called from several threads at once.
class RandomAccessObject {
 public:
  virtual ~RandomAccessObject() = default;

  virtual const std::string& uri() const = 0;
  virtual uint64_t size_bytes() const = 0;

  // Reads exactly `length` bytes starting at `offset` into `dst`.
  // OUT_OF_RANGE if [offset, offset+length) is not inside the object; other errors name the uri.
  virtual absl::Status ReadAt(uint64_t offset, size_t length, std::byte* dst) const = 0;

  // The whole object as memory, where the store is local (a read-only mmap, created on the first
  // call and valid while this object lives); nullopt where it is not. Touching the pages counts
  // toward resident memory, so streaming consumers prefer ReadAt.
  virtual std::optional<std::span<const std::byte>> Mapped() const { return std::nullopt; }

  // A POSIX file descriptor for zero-copy transfers, or -1.
  virtual int native_fd() const { return -1; }
};

// A streaming writer: bytes go to a staging location and become visible under the final name
// only on Commit. There is no seeking back. Not thread-safe.
class ObjectWriter {
 public:
  // Destroying a writer that was neither committed nor aborted aborts it.
  virtual ~ObjectWriter() = default;

  virtual const std::string& uri() const = 0;

  virtual absl::Status Append(std::span<const std::byte> data) = 0;

  // Appends `length` bytes of `source` starting at `offset`. Implementations may transfer without
  // passing the bytes through user space (copy_file_range); the default reads and appends in
  // bounded pieces.
  virtual absl::Status AppendFrom(const RandomAccessObject& source, uint64_t offset, uint64_t length);

  virtual uint64_t bytes_written() const = 0;

  // A reader over everything appended so far, before Commit, so a job can verify what it wrote
  // before making it visible. UNIMPLEMENTED where the store cannot give one (an S3 multipart
  // upload is invisible until complete); callers then verify after Commit instead.
  virtual absl::StatusOr<std::unique_ptr<RandomAccessObject>> ReadBack() {
    return absl::UnimplementedError("this store cannot read an object before it is committed");
  }

  // Ends appending and makes the bytes durable without making them visible, so that Commit has
  // little left to do; the writer may release its resources (a file descriptor) until then.
  // After Sync only ReadBack, Commit and Abort are allowed. May be called from another thread
  // than the one that appended. The default does nothing (stores where Commit does the work).
  virtual absl::Status Sync() { return absl::OkStatus(); }

  // Makes the object durable and visible under uri() atomically, replacing any object of that
  // name. After Commit (successful or not) no other call is allowed.
  virtual absl::Status Commit() = 0;

  // Discards everything written. Idempotent; never fails.
  virtual void Abort() = 0;
};

struct ObjectEntry {
  std::string uri;
  std::string relative_name;  // relative to the listed prefix, '/'-separated
  uint64_t size_bytes = 0;
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  // NOT_FOUND if no object has this uri.
  virtual absl::StatusOr<uint64_t> SizeOf(const std::string& uri) = 0;

  // NOT_FOUND if absent.
  virtual absl::StatusOr<std::unique_ptr<RandomAccessObject>> OpenForRead(const std::string& uri) = 0;

  // Starts writing `uri` (parents are created as needed). Nothing is visible until Commit.
  virtual absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenForWrite(const std::string& uri) = 0;

  // A writer for `uri` that already holds the whole of the committed object at `source_uri`,
  // which it takes over: the source is gone, and the writer commits or aborts as any other (an
  // abort deletes the bytes). Where the store cannot move an object in place it answers
  // UNIMPLEMENTED and the caller copies instead.
  virtual absl::StatusOr<std::unique_ptr<ObjectWriter>> AdoptForWrite(const std::string& source_uri,
                                                                      const std::string& uri) {
    (void)source_uri;
    (void)uri;
    return absl::UnimplementedError("this store cannot move an object in place");
  }

  // Every object under `prefix_uri`, recursively, sorted by relative_name. An absent prefix
  // lists as empty. Staging objects of unfinished writers are included (so they can be cleaned).
  virtual absl::StatusOr<std::vector<ObjectEntry>> List(const std::string& prefix_uri) = 0;

  // Removes the object. Deleting an absent object succeeds.
  virtual absl::Status Delete(const std::string& uri) = 0;

  // True if `relative_name` is a staging name made by this store's writers.
  virtual bool IsStagingName(const std::string& relative_name) const = 0;

  // Removes the directories left empty under `prefix_uri`, and the prefix itself when it is
  // empty, once their objects are deleted. Stores without directories (S3) have nothing to do.
  virtual void RemoveEmptyDirectories(const std::string& prefix_uri) { (void)prefix_uri; }
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_OBJECT_STORE_H_
