#include "workers/jobs/core/progress_tracker.h"

#include <algorithm>

#include "workers/pool/process_memory.h"

namespace modelsmith {

ProgressTracker::ProgressTracker(JobContext& context, uint64_t bytes_total, uint64_t tensors_total)
    : context_(context),
      bytes_total_(bytes_total),
      tensors_total_(tensors_total),
      start_(std::chrono::steady_clock::now()) {
  peak_resident_bytes_ = CurrentResidentBytes();
}

void ProgressTracker::SetPhase(std::string phase) {
  {
    std::lock_guard lock(mutex_);
    phase_ = std::move(phase);
  }
  MaybeReport(/*force=*/true);
}

void ProgressTracker::AddBytes(uint64_t bytes) {
  bytes_done_ += bytes;
  MaybeReport(/*force=*/false);
}

void ProgressTracker::AddTensors(uint64_t tensors) {
  tensors_done_ += tensors;
  MaybeReport(/*force=*/false);
}

void ProgressTracker::Flush() { MaybeReport(/*force=*/true); }

void ProgressTracker::MaybeReport(bool force) {
  constexpr auto kInterval = std::chrono::milliseconds(100);
  const auto now = std::chrono::steady_clock::now();
  v1::Progress progress;
  {
    std::lock_guard lock(mutex_);
    if (!force && now - last_report_ < kInterval) return;
    last_report_ = now;
    progress.set_phase(phase_);
  }
  const uint64_t rss = CurrentResidentBytes();
  uint64_t seen = peak_resident_bytes_.load();
  while (rss > seen && !peak_resident_bytes_.compare_exchange_weak(seen, rss)) {
  }
  const uint64_t done = std::min(bytes_done_.load(), bytes_total_);
  const double seconds = std::chrono::duration<double>(now - start_).count();
  const double rate = seconds > 0 ? done / seconds : 0;
  progress.set_bytes_done(done);
  progress.set_bytes_total(bytes_total_);
  progress.set_tensors_done(std::min(tensors_done_.load(), tensors_total_));
  progress.set_tensors_total(tensors_total_);
  progress.set_bytes_per_second(rate);
  progress.set_eta_seconds(rate > 0 ? (bytes_total_ - done) / rate : -1);
  context_.ReportProgress(progress);
}

}  // namespace modelsmith
