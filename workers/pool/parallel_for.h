// ParallelFor: the compute threads of one job. A job's heavy loop (quantizing the rows of a chunk)
// is cut into numbered pieces; each piece runs once, on whichever thread is free. Results must
// not depend on which thread ran a piece, so callers index their output by piece, never by
// thread, and the bytes a job writes stay the same on any number of cores.
#ifndef MODELSMITH_WORKERS_POOL_PARALLEL_FOR_H_
#define MODELSMITH_WORKERS_POOL_PARALLEL_FOR_H_

#include <cstddef>
#include <functional>

namespace modelsmith {

// The threads a job may compute on: the CPUs this process may use (sched_getaffinity), at least 1.
size_t ComputeThreads();

// Runs fn(piece, worker) for every piece in [0, count) on up to `threads` threads, the caller's
// included; `worker` in [0, threads) names the thread, for per-thread scratch space. Returns when
// every piece is done. If `fn` throws (on any thread), the pieces not yet started are skipped and
// the first exception is rethrown on the caller's thread after every helper thread has ended.
void ParallelFor(size_t count, size_t threads, const std::function<void(size_t piece, size_t worker)>& fn);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_POOL_PARALLEL_FOR_H_
