#include "workers/jobs/quantize/quantize_report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/publication.h"

namespace modelsmith {
namespace {

constexpr double kDefaultSnrWarningDb = 10.0;
constexpr size_t kWorstTensorsReported = 10;

// JSON has no infinity: an exact reconstruction's SNR is written as a huge number.
double JsonSafe(double value) { return std::isfinite(value) ? value : (value > 0 ? 1e300 : -1e300); }

}  // namespace

absl::Status RefuseTorchInput(const ModelView& model) {
  if (!model.is_torch()) return absl::OkStatus();
  return MakeError(absl::StatusCode::kInvalidArgument, "UNSUPPORTED_FORMAT",
                   absl::StrCat("input '", model.uri,
                                "' is a torch checkpoint; convert it to safetensors first "
                                "(modelsmith submit convert --to safetensors)"),
                   {{"field", "quantize.input"}});
}

QuantizeReport::QuantizeReport(double snr_warning_db)
    : snr_threshold_db_(snr_warning_db > 0 ? snr_warning_db : kDefaultSnrWarningDb) {}

void QuantizeReport::AddTranscoded(JobContext& context, const std::string& tensor, const std::string& type,
                                   const QualityStats& quality, bool quantized) {
  if (quantized)
    ++quantized_;
  else
    ++kept_;
  if (quality.non_finite() > 0) {
    context.Warn("NON_FINITE_VALUES",
                 absl::StrCat("tensor '", tensor, "' holds ", quality.non_finite(), " NaN or infinite values"), tensor);
  }
  if (quantized && quality.snr_db() < snr_threshold_db_) {
    context.Warn("LOW_SNR",
                 absl::StrFormat("tensor '%s' as %s has an SNR of %.2f dB, under %.1f dB", tensor, type,
                                 quality.snr_db(), snr_threshold_db_),
                 tensor);
  }
  v1::TensorQuality q;
  q.set_name(tensor);
  q.set_type(type);
  q.set_rmse(quality.rmse());
  q.set_max_abs_error(quality.max_abs_error());
  q.set_snr_db(quality.snr_db());
  table_.push_back({{"name", q.name()},
                    {"type", q.type()},
                    {"rmse", q.rmse()},
                    {"max_abs_error", q.max_abs_error()},
                    {"snr_db", JsonSafe(q.snr_db())}});
  qualities_.push_back(std::move(q));
}

nlohmann::ordered_json QuantizeReport::Finish(const JobRun& run, const ModelView& model,
                                              std::chrono::steady_clock::time_point start, ProgressTracker& tracker,
                                              v1::JobResult* result) const {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const uint64_t bytes_read = model.tensor_bytes;
  const uint64_t tensors = model.tensors.size();
  v1::JobFigures* figures = result->mutable_figures();
  figures->set_duration_seconds(seconds);
  figures->set_bytes_read(bytes_read);
  figures->set_tensors(tensors);
  figures->set_throughput_bytes_per_second(seconds > 0 ? bytes_read / seconds : 0);
  v1::QuantizeFigures* q = figures->mutable_quantize();
  q->set_tensors_quantized(quantized_);
  q->set_tensors_kept(kept_);
  q->set_input_bytes_per_second(figures->throughput_bytes_per_second());
  std::vector<v1::TensorQuality> worst = qualities_;
  std::stable_sort(worst.begin(), worst.end(), [](const auto& a, const auto& b) { return a.snr_db() < b.snr_db(); });
  q->clear_worst();
  for (size_t i = 0; i < worst.size() && i < kWorstTensorsReported; ++i) *q->add_worst() = worst[i];
  tracker.Flush();
  figures->set_peak_resident_bytes(tracker.peak_resident_bytes());

  nlohmann::ordered_json manifest = ManifestHeader(run, "quantize", model);
  manifest["quality"] = table_;
  manifest["figures"] = MessageJson(*figures);
  return manifest;
}

}  // namespace modelsmith
