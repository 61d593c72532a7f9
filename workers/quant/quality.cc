#include "workers/quant/quality.h"

#include <cmath>
#include <limits>

namespace modelsmith {

void QualityStats::Add(const float* source, const float* reconstructed, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(source[i])) {
      ++non_finite_;
      continue;
    }
    const double s = source[i];
    const double e = s - static_cast<double>(reconstructed[i]);
    signal_ += s * s;
    noise_ += e * e;
    max_abs_error_ = std::max(max_abs_error_, std::fabs(e));
    ++count_;
  }
}

double QualityStats::rmse() const { return count_ == 0 ? 0 : std::sqrt(noise_ / count_); }

double QualityStats::snr_db() const {
  if (noise_ == 0) return std::numeric_limits<double>::infinity();
  if (signal_ == 0) return -std::numeric_limits<double>::infinity();
  return 10 * std::log10(signal_ / noise_);
}

}  // namespace modelsmith
