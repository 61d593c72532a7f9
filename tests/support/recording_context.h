// RecordingContext: a JobContext that records what a job reports, and can ask it to stop after a
// given number of progress reports.
#ifndef MODELSMITH_TESTS_SUPPORT_RECORDING_CONTEXT_H_
#define MODELSMITH_TESTS_SUPPORT_RECORDING_CONTEXT_H_

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "workers/jobs/core/job_context.h"

namespace modelsmith {

class RecordingContext final : public JobContext {
 public:
  bool stop_requested() const override { return stop_; }
  void ReportProgress(const v1::Progress& progress) override {
    std::lock_guard lock(mutex_);
    progress_.push_back(progress);
    if (stop_after_progress_ > 0 && progress_.size() >= stop_after_progress_) stop_ = true;
  }
  void Warn(absl::string_view code, absl::string_view message, absl::string_view tensor) override {
    std::lock_guard lock(mutex_);
    warnings_.push_back({std::string(code), std::string(tensor)});
  }
  void Log(absl::string_view) override {}

  void StopAfterProgressReports(size_t n) { stop_after_progress_ = n; }
  std::vector<std::pair<std::string, std::string>> warnings() {
    std::lock_guard lock(mutex_);
    return warnings_;
  }
  std::vector<v1::Progress> progress() {
    std::lock_guard lock(mutex_);
    return progress_;
  }

 private:
  std::atomic<bool> stop_{false};
  size_t stop_after_progress_ = 0;
  std::mutex mutex_;
  std::vector<v1::Progress> progress_;
  std::vector<std::pair<std::string, std::string>> warnings_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_TESTS_SUPPORT_RECORDING_CONTEXT_H_
