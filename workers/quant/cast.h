// Casting float tensors between F64, F32, F16, BF16, F8_E4M3 (torch float8_e4m3fn) and F8_E5M2,
// element by element, little-endian bytes in and out. Pure functions.
//
// Rounding is to nearest, ties to even, from the exact source value (no double rounding through
// an intermediate type). Special values:
//   - NaN stays NaN (quiet; F16/BF16 keep the sign and top payload bits, as F16C does; F8 gives
//     sign | 0x7F for E4M3 and sign | 0x7E for E5M2);
//   - F16 / BF16 / F32 targets are IEEE: +-Inf stays +-Inf, a finite value past the largest
//     finite one (after rounding) becomes +-Inf and is counted as `overflowed`;
//   - F8 targets saturate: a finite value past the largest finite one (448 for E4M3, 57344 for
//     E5M2) becomes +-max and is counted as `saturated`; +-Inf becomes +-Inf in E5M2 (which has
//     Inf) and +-448 in E4M3 (which has none; counted as `saturated`);
//   - subnormals of every target are produced exactly; widening is exact.
#ifndef MODELSMITH_WORKERS_QUANT_CAST_H_
#define MODELSMITH_WORKERS_QUANT_CAST_H_

#include <cstddef>
#include <cstdint>

#include "workers/tensor/dtype.h"

namespace modelsmith {

// F64, F32, F16, BF16, F8_E4M3, F8_E5M2.
bool IsCastableFloat(DType dtype);

struct CastCounts {
  uint64_t overflowed = 0;  // finite source values that became +-Inf
  uint64_t saturated = 0;   // values clamped to the F8 target's largest finite value
  uint64_t nan = 0;         // NaN source values (kept as NaN)
  void Add(const CastCounts& o) {
    overflowed += o.overflowed;
    saturated += o.saturated;
    nan += o.nan;
  }
};

// Casts `n` elements of `from` at `in` into `to` at `out` (which must not overlap `in`).
// REQUIRES: IsCastableFloat(from) && IsCastableFloat(to).
void CastElements(DType from, DType to, const std::byte* in, size_t n, std::byte* out, CastCounts* counts);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_CAST_H_
