#include "workers/pool/parallel_for.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace modelsmith {

size_t ComputeThreads() {
  static const size_t threads = [] {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max<size_t>(1, CPU_COUNT(&set));
    return std::max<size_t>(1, std::thread::hardware_concurrency());
  }();
  return threads;
}

void ParallelFor(size_t count, size_t threads, const std::function<void(size_t piece, size_t worker)>& fn) {
  threads = std::max<size_t>(1, std::min(threads, count));
  std::atomic<size_t> next{0};
  std::mutex failure_mutex;
  std::exception_ptr failure;
  // An exception escaping a helper thread would std::terminate the whole server. The first one
  // is kept, the remaining pieces are skipped, and it is rethrown on the caller's thread once
  // every helper has been joined, where the job's own error handling sees it.
  auto run = [&](size_t worker) {
    try {
      for (size_t piece = next++; piece < count; piece = next++) fn(piece, worker);
    } catch (...) {
      next = count;
      std::lock_guard lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  };
  std::vector<std::thread> helpers;
  for (size_t w = 1; w < threads; ++w) helpers.emplace_back(run, w);
  run(0);
  for (std::thread& t : helpers) t.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace modelsmith
