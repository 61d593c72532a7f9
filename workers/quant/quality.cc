#include "workers/quant/quality.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "workers/quant/simd_avx2.h"

namespace modelsmith {
namespace {

// Finite values are summed in blocks of kBlock, each in 8 float lanes (lane = index % 8) that
// are then added pairwise and carried in double: fast, vectorisable, and the same bits whether
// the AVX2 or the scalar path runs. A block with a NaN or infinity is taken value by value.
constexpr size_t kBlock = 256;

void BlockScalar(const float* s, const float* r, size_t n, float* signal, float* noise, float* max_error) {
  for (size_t i = 0; i < n; ++i) {
    const float e = s[i] - r[i];
    signal[i % 8] += s[i] * s[i];
    noise[i % 8] += e * e;
    *max_error = std::max(*max_error, std::fabs(e));
  }
}

bool AllFiniteScalar(const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

float PairwiseSum(const float* lanes) {
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

}  // namespace

void QualityStats::Add(const float* source, const float* reconstructed, size_t n) {
  const bool simd = CpuHasAvx2Fma16c();
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t count = std::min(kBlock, n - start);
    const float* s = source + start;
    const float* r = reconstructed + start;
    if (simd ? AllFiniteAvx2(s, count) : AllFiniteScalar(s, count)) {
      float signal[8] = {}, noise[8] = {}, max_error = 0;
      if (simd) {
        QualityBlockAvx2(s, r, count, signal, noise, &max_error);
      } else {
        BlockScalar(s, r, count, signal, noise, &max_error);
      }
      signal_ += PairwiseSum(signal);
      noise_ += PairwiseSum(noise);
      max_abs_error_ = std::max(max_abs_error_, static_cast<double>(max_error));
      count_ += count;
      continue;
    }
    for (size_t i = 0; i < count; ++i) {
      if (!std::isfinite(s[i])) {
        ++non_finite_;
        continue;
      }
      const double e = static_cast<double>(s[i]) - static_cast<double>(r[i]);
      signal_ += static_cast<double>(s[i]) * s[i];
      noise_ += e * e;
      max_abs_error_ = std::max(max_abs_error_, std::fabs(e));
      ++count_;
    }
  }
}

void QualityStats::Merge(const QualityStats& other) {
  signal_ += other.signal_;
  noise_ += other.noise_;
  max_abs_error_ = std::max(max_abs_error_, other.max_abs_error_);
  count_ += other.count_;
  non_finite_ += other.non_finite_;
}

double QualityStats::relative_error() const {
  if (noise_ == 0) return 0;
  return signal_ == 0 ? std::numeric_limits<double>::infinity() : std::sqrt(noise_ / signal_);
}

double QualityStats::rmse() const { return count_ == 0 ? 0 : std::sqrt(noise_ / count_); }

double QualityStats::snr_db() const {
  if (noise_ == 0) return std::numeric_limits<double>::infinity();
  if (signal_ == 0) return -std::numeric_limits<double>::infinity();
  return 10 * std::log10(signal_ / noise_);
}

}  // namespace modelsmith
