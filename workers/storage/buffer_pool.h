// BufferPool: reusable byte buffers for a stream of pieces that are filled, handed to a writer
// thread, and dropped once written.
//
// A fresh multi-megabyte allocation costs a page fault and a page clearing per 4 KiB every time
// (glibc returns large blocks to the kernel on free); taking the same buffers back avoids both.
// Buffers are given back by their deleter when the last holder lets go, from any thread, even
// after the pool itself is gone. At most `max_spare` buffers wait in the pool (the rest are freed);
// a spare smaller than a request stays and a larger buffer is made, so users that take pieces of
// one size keep about as much memory as they had in flight at once.
#ifndef MODELSMITH_WORKERS_STORAGE_BUFFER_POOL_H_
#define MODELSMITH_WORKERS_STORAGE_BUFFER_POOL_H_

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace modelsmith {

class BufferPool {
 public:
  explicit BufferPool(size_t max_spare);

  // A buffer of at least `size` bytes, uninitialised.
  std::shared_ptr<std::byte[]> Take(size_t size);

 private:
  struct Spare {
    std::unique_ptr<std::byte[]> data;
    size_t capacity;
  };
  struct State {
    std::mutex mutex;
    std::vector<Spare> spares;
    size_t max_spare;
  };
  std::shared_ptr<State> state_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_BUFFER_POOL_H_
