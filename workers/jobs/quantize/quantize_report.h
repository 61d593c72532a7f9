// What both quantize jobs (GGUF and the safetensors layouts) report: a quality row and warnings
// per quantized tensor, the counts, the worst tensors and the figures.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_REPORT_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_REPORT_H_

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "modelsmith/v1/job.pb.h"
#include "nlohmann/json.hpp"
#include "workers/formats/model_view.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/quant/quality.h"
#include "workers/storage/object_store.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

// INVALID_ARGUMENT (UNSUPPORTED_FORMAT, field quantize.input) for a torch checkpoint: quantize
// reads safetensors and GGUF; the convert job turns a torch checkpoint into safetensors first.
absl::Status RefuseTorchInput(const ModelView& model);

class QuantizeReport {
 public:
  // `snr_warning_db` 0 means the default, 10 dB.
  explicit QuantizeReport(double snr_warning_db);

  // A tensor written in `type` from its source: NON_FINITE_VALUES when the source held NaN/Inf,
  // LOW_SNR when `quantized` and the SNR is under the threshold; a row of the quality table.
  // Counts it as quantized or kept.
  void AddTranscoded(JobContext& context, const std::string& tensor, const std::string& type,
                     const QualityStats& quality, bool quantized);
  // A tensor copied as it was.
  void AddKept() { ++kept_; }

  // The manifest's "quality" table: every transcoded tensor in job order.
  const nlohmann::ordered_json& table() const { return table_; }

  // Fills the figures of `result` (duration since `start`, the model's bytes read and tensors,
  // throughput, peak resident memory, and the quantize figures with the ten worst tensors by SNR)
  // and returns the manifest body: header, quality table, figures. The caller adds artifacts.
  nlohmann::ordered_json Finish(const JobRun& run, const ModelView& model, std::chrono::steady_clock::time_point start,
                                ProgressTracker& tracker, v1::JobResult* result) const;

 private:
  double snr_threshold_db_;
  nlohmann::ordered_json table_ = nlohmann::ordered_json::array();
  std::vector<v1::TensorQuality> qualities_;
  uint32_t quantized_ = 0;
  uint32_t kept_ = 0;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_QUANTIZE_REPORT_H_
