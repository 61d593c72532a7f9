#include "workers/pool/parallel_for.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
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
  auto run = [&](size_t worker) {
    for (size_t piece = next++; piece < count; piece = next++) fn(piece, worker);
  };
  std::vector<std::thread> helpers;
  for (size_t w = 1; w < threads; ++w) helpers.emplace_back(run, w);
  run(0);
  for (std::thread& t : helpers) t.join();
}

}  // namespace modelsmith
