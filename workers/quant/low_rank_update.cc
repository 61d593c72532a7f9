#include "workers/quant/low_rank_update.h"

#include <cmath>
#include <utility>

#include "workers/quant/simd_avx2.h"

namespace modelsmith {

LowRankUpdate::LowRankUpdate(std::vector<float> up, std::vector<float> down, uint64_t out, uint64_t rank,
                             uint64_t cols_a, double scale, double strength, bool transposed,
                             std::vector<float> magnitude)
    : rank_(rank), strength_(strength), magnitude_(std::move(magnitude)) {
  const bool dora = !magnitude_.empty();
  // With DoRA the strength interpolates the finished row; otherwise it folds into the scale.
  const float s = static_cast<float>(dora ? scale : scale * strength);
  if (!transposed) {
    rows_ = out;
    cols_ = cols_a;
    coef_ = std::move(up);
    for (float& c : coef_) c *= s;
    basis_ = std::move(down);
    return;
  }
  rows_ = cols_a;
  cols_ = out;
  coef_.resize(rows_ * rank_);
  for (uint64_t k = 0; k < rank_; ++k) {
    for (uint64_t i = 0; i < rows_; ++i) coef_[i * rank_ + k] = s * down[k * cols_a + i];
  }
  basis_.resize(rank_ * cols_);
  for (uint64_t o = 0; o < out; ++o) {
    for (uint64_t k = 0; k < rank_; ++k) basis_[k * cols_ + o] = up[o * rank_ + k];
  }
}

void LowRankUpdate::ApplyRows(uint64_t first_row, uint64_t rows, float* w) const {
  const bool dora = !magnitude_.empty();
  std::vector<float> original(dora && strength_ != 1.0 ? cols_ : 0);
  const bool simd = CpuHasAvx2Fma16c();
  for (uint64_t r = 0; r < rows; ++r) {
    float* __restrict row = w + r * cols_;
    const float* coef = coef_.data() + (first_row + r) * rank_;
    if (!original.empty()) std::copy(row, row + cols_, original.begin());
    if (simd) {
      LowRankRowAvx2(coef, basis_.data(), rank_, cols_, row);
    } else {
      for (uint64_t k = 0; k < rank_; ++k) {
        const float c = coef[k];
        const float* __restrict basis = basis_.data() + k * cols_;
        for (uint64_t j = 0; j < cols_; ++j) row[j] = std::fma(c, basis[j], row[j]);
      }
    }
    if (!dora) continue;
    double norm = 0;
    for (uint64_t j = 0; j < cols_; ++j) norm += static_cast<double>(row[j]) * row[j];
    norm = std::sqrt(norm);
    const float factor = norm > 0 ? static_cast<float>(magnitude_[first_row + r] / norm) : 0.0f;
    for (uint64_t j = 0; j < cols_; ++j) row[j] *= factor;
    if (original.empty()) continue;
    const float s = static_cast<float>(strength_);
    for (uint64_t j = 0; j < cols_; ++j) row[j] = original[j] + s * (row[j] - original[j]);
  }
}

}  // namespace modelsmith
