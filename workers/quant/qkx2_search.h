// ggml's make_qkx2_quants (ggml-quants.c): the search for the scale and min of one K-quant
// sub-block that Q2_K, Q4_K and Q5_K share, and where nearly all of their time goes. For each of
// nstep + 1 candidate scales it rounds the sub-block, fits scale and min by least squares, and
// keeps the first candidate with the least weighted error.
//
// The AVX2 version (simd_avx2.h) runs eight candidates at once, one per lane; within a lane every
// sum runs in element order with the same roundings, so it returns exactly what the scalar search
// returns. MakeQkx2Quants picks it when the CPU has AVX2.
#ifndef MODELSMITH_WORKERS_QUANT_QKX2_SEARCH_H_
#define MODELSMITH_WORKERS_QUANT_QKX2_SEARCH_H_

#include <cstdint>
#include <cstring>

namespace modelsmith {

// ggml's nearest_int: round to nearest, ties to even, through the 1.5 * 2^23 trick (|value| < 2^22).
inline int GgmlNearestInt(float value) {
  const float shifted = value + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return (bits & 0x007FFFFF) - 0x00400000;
}

// The search's start, shared by both versions: min (at most 0) and max, the weighted sums, and
// the first guess (scale nmax / (max - min)) written to L with its error. `constant` when
// max == min: then L is all zero and the search ends with scale 0.
struct Qkx2Start {
  float min, max, sum_w, sum_x, scale, best_error;
  bool constant;
};
Qkx2Start Qkx2FirstGuess(int n, int nmax, const float* x, const float* weights, uint8_t* L, bool use_mad);

// `n` <= 32 values with `weights`; writes codes 0..nmax to L (Laux is scratch of n bytes) and
// -min to *the_min; returns the scale.
float MakeQkx2Quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, uint8_t* Laux,
                     float rmin, float rdelta, int nstep, bool use_mad);
float MakeQkx2QuantsScalar(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                           uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad);

// The same search for `groups` independent groups of `n` values (x and weights group after group,
// L likewise; scales[g] and the_mins[g] out). The AVX2 version (simd_avx2.h) runs eight groups
// at once, one per lane, each lane walking its candidates in order exactly as the scalar search
// does; MakeQkx2QuantsGroups uses it where the CPU has AVX2. REQUIRES: groups % 8 == 0, n <= 32.
void MakeQkx2QuantsGroups(int groups, int n, int nmax, const float* x, const float* weights, uint8_t* L, float* scales,
                          float* the_mins, float rmin, float rdelta, int nstep, bool use_mad);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_QKX2_SEARCH_H_
