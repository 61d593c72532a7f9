#include "workers/storage/buffer_pool.h"

#include <algorithm>

namespace modelsmith {

BufferPool::BufferPool(size_t max_spare) : state_(std::make_shared<State>()) { state_->max_spare = max_spare; }

std::shared_ptr<std::byte[]> BufferPool::Take(size_t size) {
  Spare buffer{nullptr, 0};
  {
    std::lock_guard lock(state_->mutex);
    // The smallest spare that fits, so that small requests do not pin the large buffers.
    auto best = state_->spares.end();
    for (auto it = state_->spares.begin(); it != state_->spares.end(); ++it) {
      if (it->capacity >= size && (best == state_->spares.end() || it->capacity < best->capacity)) best = it;
    }
    if (best != state_->spares.end()) {
      buffer = std::move(*best);
      state_->spares.erase(best);
    }
  }
  if (buffer.data == nullptr) {
    // Rounded up to 1 MiB so that pieces of slightly different sizes share buffers.
    buffer.capacity = std::max<size_t>(1, (size + (1 << 20) - 1) >> 20) << 20;
    buffer.data.reset(new std::byte[buffer.capacity]);
  }
  const size_t capacity = buffer.capacity;
  std::weak_ptr<State> home = state_;
  return std::shared_ptr<std::byte[]>(buffer.data.release(), [home, capacity](std::byte* p) {
    std::unique_ptr<std::byte[]> owned(p);
    if (std::shared_ptr<State> state = home.lock()) {
      std::lock_guard lock(state->mutex);
      if (state->spares.size() < state->max_spare) state->spares.push_back({std::move(owned), capacity});
    }
  });
}

}  // namespace modelsmith
