// LowRankUpdate: one LoRA adapter's change to one base weight, applied a row at a time so that a
// merge never holds more than a chunk of the base in F32 (formats.md §8 gives the formulas).
//
// Every shape reduces to rows of the base as it is stored, each gaining a combination of r basis
// rows:  W[row, :] += sum_k coef[row, k] * basis[k, :]
//   linear / conv ([out, in(, kh, kw)], flattened to [out, in*kh*kw]):
//       coef = scale * B [out, r], basis = A [r, in*kh*kw]      (delta = scale * B @ A)
//   fan_in_fan_out (GPT-2 Conv1D stores [in, out]):
//       coef = scale * A^T [in, r], basis = B^T [r, out]          (delta = (scale * B @ A)^T)
// DoRA then rescales each updated row to the magnitude it was trained for:
//   W'[o, :] = magnitude[o] / ||V[o, :]|| * V[o, :], V = W + delta   (PEFT DoraLinearVariant;
//   for convolutions the norm over all dims but 0 is the flattened row's norm)
// Each step k adds coef * basis with one rounding (a fused multiply-add, AVX2 or std::fma), in
// k order, so every CPU computes the same bits.
// A strength s other than 1 interpolates: W + s * (W' - W), which for plain LoRA is
// W + s * delta as kohya's multiplier gives.
#ifndef MODELSMITH_WORKERS_QUANT_LOW_RANK_UPDATE_H_
#define MODELSMITH_WORKERS_QUANT_LOW_RANK_UPDATE_H_

#include <cstdint>
#include <vector>

namespace modelsmith {

class LowRankUpdate {
 public:
  // `up` is B [out, r], `down` A [r, cols_a] (cols_a = in * kh * kw), both F32 row-major.
  // Transposed (fan_in_fan_out): the base is [cols_a, out]. `magnitude` (DoRA, [out]) may be
  // empty; DoRA with transposed is not defined here and must be refused by the caller.
  LowRankUpdate(std::vector<float> up, std::vector<float> down, uint64_t out, uint64_t rank, uint64_t cols_a,
                double scale, double strength, bool transposed, std::vector<float> magnitude);

  uint64_t base_rows() const { return rows_; }
  uint64_t base_cols() const { return cols_; }

  // Updates base rows [first_row, first_row + rows) held in `w` ([rows, base_cols()], F32).
  void ApplyRows(uint64_t first_row, uint64_t rows, float* w) const;

 private:
  uint64_t rows_, cols_, rank_;
  double strength_;
  std::vector<float> coef_;   // [rows_, rank_], the scale folded in
  std::vector<float> basis_;  // [rank_, cols_]
  std::vector<float> magnitude_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_LOW_RANK_UPDATE_H_
