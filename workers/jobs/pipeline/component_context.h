// The JobContext a pipeline gives each component's job: its progress becomes the pipeline's,
// its warnings and logs name the component, stops and ownership pass through.
#ifndef MODELSMITH_WORKERS_JOBS_PIPELINE_COMPONENT_CONTEXT_H_
#define MODELSMITH_WORKERS_JOBS_PIPELINE_COMPONENT_CONTEXT_H_

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "workers/jobs/core/job_context.h"

namespace modelsmith {

// Where a component stands in the whole pipeline's progress: its place, and its weight bytes
// after those of the components before it.
struct ComponentShare {
  uint32_t index = 0, count = 0;
  uint64_t bytes_before = 0, bytes = 0, bytes_total = 0;
};

// Progress, warnings and logs of one component's job, marked with the component and its place;
// its bytes become the pipeline's (the component's share scaled by how far its job is).
class ComponentContext : public JobContext {
 public:
  ComponentContext(JobContext& parent, std::string component, ComponentShare share)
      : parent_(parent), component_(std::move(component)), share_(share) {}
  bool stop_requested() const override { return parent_.stop_requested(); }
  void ReportProgress(const v1::Progress& progress) override {
    v1::Progress marked = progress;
    marked.set_component(component_);
    marked.set_components_done(share_.index);
    marked.set_components_total(share_.count);
    const double fraction =
        progress.bytes_total() > 0 ? std::min(1.0, double(progress.bytes_done()) / double(progress.bytes_total())) : 0;
    marked.set_bytes_done(share_.bytes_before + static_cast<uint64_t>(fraction * double(share_.bytes)));
    marked.set_bytes_total(share_.bytes_total);
    marked.set_eta_seconds(-1);  // the component's own ETA is not the pipeline's
    parent_.ReportProgress(marked);
  }
  void Warn(absl::string_view code, absl::string_view message, absl::string_view tensor) override {
    parent_.Warn(code, absl::StrCat(component_, ": ", message), tensor);
  }
  void Log(absl::string_view message) override { parent_.Log(absl::StrCat(component_, ": ", message)); }
  absl::Status ConfirmStillOwner() const override { return parent_.ConfirmStillOwner(); }

 private:
  JobContext& parent_;
  std::string component_;
  ComponentShare share_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_PIPELINE_COMPONENT_CONTEXT_H_
