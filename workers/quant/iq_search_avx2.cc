// MeasureIqCandidatesAvx2 (iq_search.h). Compiled with -mavx2 -mfma -mf16c -ffp-contract=off:
// every multiply and add rounds where MeasureIqCandidatesScalar's rounds, so both fill the fits
// with the same bits.
//
// Lane j of a pass is candidate first + j. Per vector of the block, the lanes' levels and codes
// come from vector arithmetic; the lanes whose code is off the grid are grouped by code, and each
// group walks its code's neighbour list once with one scale per lane (the scalar search walks it
// once per candidate). The fit sums then run per lane in element order.
#include <immintrin.h>

#include <algorithm>
#include <cfloat>

#include "workers/quant/iq_search.h"

namespace modelsmith {
namespace {

// nearest_int(0.5 * (id * x - 1)) clamped to [0, max_q - 1], as LevelsAt computes it.
inline __m256i LevelsOf(__m256 id, float x, __m256i top) {
  const __m256 v =
      _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_sub_ps(_mm256_mul_ps(id, _mm256_set1_ps(x)), _mm256_set1_ps(1.0f)));
  const __m256 shifted = _mm256_add_ps(v, _mm256_set1_ps(12582912.0f));
  const __m256i l = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x007FFFFF)),
                                     _mm256_set1_epi32(0x00400000));
  return _mm256_min_epi32(_mm256_max_epi32(l, _mm256_setzero_si256()), top);
}

// For the lanes in `lanes` (a bit per lane), the first neighbour of `code` of least weighted
// squared distance at that lane's scale, into best[lane]: the scalar search's terms
// (w * (s * p - x)) * (s * p - x), added in coordinate order, with the same strict comparison.
template <int kDims>
void SearchNeighbours(const IqGrid& grid, uint32_t code, const float* xval, const float* waux, __m256 scale,
                      int32_t* best) {
  int count = 0;
  const uint16_t* neighbours = grid.Neighbours(code, &count);
  const float* points = grid.FloatPoints();
  __m256 x[kDims], w[kDims];
#pragma GCC unroll 8
  for (int i = 0; i < kDims; ++i) {
    x[i] = _mm256_set1_ps(xval[i]);
    w[i] = _mm256_set1_ps(waux[i]);
  }
  auto distance = [&](int j) {
    const float* p = points + static_cast<size_t>(neighbours[j]) * kDims;
    __m256 d2 = _mm256_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < kDims; ++i) {
      const __m256 diff = _mm256_sub_ps(_mm256_mul_ps(scale, _mm256_broadcast_ss(p + i)), x[i]);
      d2 = _mm256_add_ps(d2, _mm256_mul_ps(_mm256_mul_ps(w[i], diff), diff));
    }
    return d2;
  };
  auto index_of = [&](int j) { return _mm256_castsi256_ps(_mm256_set1_epi32(neighbours[j])); };
  __m256 best_d2 = _mm256_set1_ps(FLT_MAX);
  __m256 best_index = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  int j = 0;
  // Two neighbours a, b at a time: the one a sequential scan would prefer is b when b < a or a
  // is NaN, else a; it then replaces the best so far when strictly smaller. This halves the
  // compare-and-blend chain through best_d2 and keeps the scan's choice, first index on ties.
  for (; j + 1 < count; j += 2) {
    const __m256 a = distance(j), b = distance(j + 1);
    const __m256 take_b = _mm256_or_ps(_mm256_cmp_ps(b, a, _CMP_LT_OQ), _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
    const __m256 pair = _mm256_blendv_ps(a, b, take_b);
    const __m256 pair_index = _mm256_blendv_ps(index_of(j), index_of(j + 1), take_b);
    const __m256 better = _mm256_cmp_ps(pair, best_d2, _CMP_LT_OQ);
    best_d2 = _mm256_blendv_ps(best_d2, pair, better);
    best_index = _mm256_blendv_ps(best_index, pair_index, better);
  }
  if (j < count) {
    const __m256 d2 = distance(j);
    const __m256 better = _mm256_cmp_ps(d2, best_d2, _CMP_LT_OQ);
    best_index = _mm256_blendv_ps(best_index, index_of(j), better);
  }
  alignas(32) int32_t found[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(found), _mm256_castps_si256(best_index));
  for (int lane = 0; lane < 8; ++lane) best[lane] = found[lane];
}

template <int kDims>
void MeasurePass(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight, const float* waux,
                 int first, int lanes, const float* id_lanes, IqCandidateFits* fits) {
  const int vectors = search.n / kDims;
  const __m256 id = _mm256_loadu_ps(id_lanes);
  alignas(32) float scale_lanes[8];
  for (int j = 0; j < 8; ++j) scale_lanes[j] = 1 / id_lanes[j];
  const __m256 scale = _mm256_load_ps(scale_lanes);
  const __m256i top = _mm256_set1_epi32(search.max_q - 1);
  const float* points = grid.FloatPoints();
  __m256 sumqx = _mm256_setzero_ps(), sumq2 = _mm256_setzero_ps();
  for (int k = 0; k < vectors; ++k) {
    const float* xk = xval + kDims * k;
    __m256i code = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int i = 0; i < kDims; ++i)
      code = _mm256_or_si256(code, _mm256_slli_epi32(LevelsOf(id, xk[i], top), grid.bits() * i));
    alignas(32) uint32_t codes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(codes), code);
    int32_t index[8], found[8];
    unsigned off_grid = 0;
    for (int j = 0; j < lanes; ++j) {
      index[j] = grid.IndexOf(codes[j]);
      if (index[j] < 0) off_grid |= 1u << j;
    }
    for (int j = lanes; j < 8; ++j) index[j] = 0;  // padding lanes read point 0 and are dropped
    while (off_grid != 0) {
      const uint32_t shared = codes[__builtin_ctz(off_grid)];
      SearchNeighbours<kDims>(grid, shared, xk, waux + kDims * k, scale, found);
      for (int j = 0; j < lanes; ++j) {
        if ((off_grid >> j & 1) && codes[j] == shared) {
          index[j] = found[j];
          off_grid &= ~(1u << j);
        }
      }
    }
    for (int j = 0; j < lanes; ++j) {
      fits->index[first + j][k] = static_cast<int16_t>(index[j]);
      fits->on_grid[first + j][k] = grid.IndexOf(codes[j]) >= 0;
    }
    const __m256i offsets =
        _mm256_mullo_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(index)), _mm256_set1_epi32(kDims));
#pragma GCC unroll 8
    for (int i = 0; i < kDims; ++i) {
      const __m256 q = _mm256_i32gather_ps(points + i, offsets, 4);
      const float w = weight[kDims * k + i];
      sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(_mm256_set1_ps(w * xk[i]), q));
      sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(w), q), q));
    }
  }
  alignas(32) float qx[8], q2[8];
  _mm256_store_ps(qx, sumqx);
  _mm256_store_ps(q2, sumq2);
  for (int j = 0; j < lanes; ++j) {
    fits->sumqx[first + j] = qx[j];
    fits->sumq2[first + j] = q2[j];
  }
}

}  // namespace

void MeasureIqCandidatesAvx2(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight,
                             const float* waux, float top, IqCandidateFits* fits) {
  const int candidates = 2 * search.half_tries + 1;
  for (int first = 0; first < candidates; first += 8) {
    const int lanes = std::min(8, candidates - first);
    float id[8];
    for (int j = 0; j < 8; ++j) {
      const int is = std::min(first + j, candidates - 1) - search.half_tries;
      id[j] = (2 * search.max_q - 1 + is * search.step) / top;
    }
    if (grid.dims() == 4)
      MeasurePass<4>(grid, search, xval, weight, waux, first, lanes, id, fits);
    else
      MeasurePass<8>(grid, search, xval, weight, waux, first, lanes, id, fits);
  }
}

}  // namespace modelsmith
