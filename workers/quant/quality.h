// QualityStats: how far a quantized tensor is from its source, accumulated chunk by chunk so a
// tensor never needs a second pass: RMSE, max absolute error, SNR, and non-finite inputs.
#ifndef MODELSMITH_WORKERS_QUANT_QUALITY_H_
#define MODELSMITH_WORKERS_QUANT_QUALITY_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

class QualityStats {
 public:
  // Adds `n` source values and their reconstructions. Non-finite source values are counted and
  // left out of the error figures.
  // Finite values are summed in FP32 blocks of 256 carried in double (see quality.cc), so the
  // figures are the same on every CPU.
  void Add(const float* source, const float* reconstructed, size_t n);
  // Adds another tensor part's figures (parts merged in a fixed order stay deterministic).
  void Merge(const QualityStats& other);

  double rmse() const;
  double max_abs_error() const { return max_abs_error_; }
  // 10*log10(signal energy / error energy); +infinity for an exact reconstruction.
  double snr_db() const;
  // sqrt(error energy / signal energy): ||reconstructed - source|| / ||source||; 0 when exact,
  // +infinity when the source is all zeros and the reconstruction is not.
  double relative_error() const;
  uint64_t non_finite() const { return non_finite_; }
  uint64_t count() const { return count_; }

 private:
  double signal_ = 0;
  double noise_ = 0;
  double max_abs_error_ = 0;
  uint64_t count_ = 0;
  uint64_t non_finite_ = 0;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_QUALITY_H_
