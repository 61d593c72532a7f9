// ProgressTracker: turns "n more bytes done" into Progress reports with rate and ETA, sent at
// most every 100 ms (and always on phase changes), and samples resident memory as it goes.
#ifndef MODELSMITH_WORKERS_JOBS_CORE_PROGRESS_TRACKER_H_
#define MODELSMITH_WORKERS_JOBS_CORE_PROGRESS_TRACKER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "workers/jobs/core/job_context.h"

namespace modelsmith {

class ProgressTracker {
 public:
  ProgressTracker(JobContext& context, uint64_t bytes_total, uint64_t tensors_total);

  // Starts a phase ("plan", "execute", "verify", "publish") and reports at once.
  void SetPhase(std::string phase);

  // Thread-safe.
  void AddBytes(uint64_t bytes);
  void AddTensors(uint64_t tensors);

  // Reports now regardless of the rate limit.
  void Flush();

  // The highest resident set size seen so far (sampled at each report and at construction).
  uint64_t peak_resident_bytes() const { return peak_resident_bytes_.load(); }

 private:
  void MaybeReport(bool force);

  JobContext& context_;
  const uint64_t bytes_total_;
  const uint64_t tensors_total_;
  const std::chrono::steady_clock::time_point start_;
  std::atomic<uint64_t> bytes_done_{0};
  std::atomic<uint64_t> tensors_done_{0};
  std::atomic<uint64_t> peak_resident_bytes_{0};
  std::mutex mutex_;  // guards phase_ and last_report_
  std::string phase_ = "plan";
  std::chrono::steady_clock::time_point last_report_{};
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CORE_PROGRESS_TRACKER_H_
