// MeasureIqCandidatesAvx512 (iq_search.h): iq_search_avx2.cc's method with sixteen candidates
// per pass, so a block's 19 or 31 candidates take two passes and more of them share each
// neighbour walk. Compiled with -mavx512f -mavx2 -mfma -ffp-contract=off; called only where
// CpuHasAvx512() holds. Every multiply and add rounds where the scalar search's rounds.
#include <immintrin.h>

#include <cfloat>

#include "workers/quant/iq_search.h"

namespace modelsmith {
namespace {

constexpr int kLanes = 16;

// nearest_int(0.5 * (id * x - 1)) clamped to [0, max_q - 1], as LevelsAt computes it.
inline __m512i LevelsOf(__m512 id, float x, __m512i top) {
  const __m512 v =
      _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_sub_ps(_mm512_mul_ps(id, _mm512_set1_ps(x)), _mm512_set1_ps(1.0f)));
  const __m512 shifted = _mm512_add_ps(v, _mm512_set1_ps(12582912.0f));
  const __m512i l = _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x007FFFFF)),
                                     _mm512_set1_epi32(0x00400000));
  return _mm512_min_epi32(_mm512_max_epi32(l, _mm512_setzero_si512()), top);
}

// The first neighbour of `code` of least weighted squared distance at each lane's scale (the
// scalar search's terms and strict comparison), pairs of neighbours at a time as in the AVX2
// version.
template <int kDims>
__m512i SearchNeighbours(const IqGrid& grid, uint32_t code, const float* xval, const float* waux, __m512 scale) {
  int count = 0;
  const uint16_t* neighbours = grid.Neighbours(code, &count);
  const float* points = grid.FloatPoints();
  __m512 x[kDims], w[kDims];
#pragma GCC unroll 8
  for (int i = 0; i < kDims; ++i) {
    x[i] = _mm512_set1_ps(xval[i]);
    w[i] = _mm512_set1_ps(waux[i]);
  }
  auto distance = [&](int j) {
    const float* p = points + static_cast<size_t>(neighbours[j]) * kDims;
    __m512 d2 = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < kDims; ++i) {
      const __m512 diff = _mm512_sub_ps(_mm512_mul_ps(scale, _mm512_set1_ps(p[i])), x[i]);
      d2 = _mm512_add_ps(d2, _mm512_mul_ps(_mm512_mul_ps(w[i], diff), diff));
    }
    return d2;
  };
  __m512 best_d2 = _mm512_set1_ps(FLT_MAX);
  __m512i best_index = _mm512_set1_epi32(-1);
  int j = 0;
  for (; j + 1 < count; j += 2) {
    const __m512 a = distance(j), b = distance(j + 1);
    const __mmask16 take_b = _mm512_cmp_ps_mask(b, a, _CMP_LT_OQ) | _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    const __m512 pair = _mm512_mask_blend_ps(take_b, a, b);
    const __m512i pair_index =
        _mm512_mask_blend_epi32(take_b, _mm512_set1_epi32(neighbours[j]), _mm512_set1_epi32(neighbours[j + 1]));
    const __mmask16 better = _mm512_cmp_ps_mask(pair, best_d2, _CMP_LT_OQ);
    best_d2 = _mm512_mask_blend_ps(better, best_d2, pair);
    best_index = _mm512_mask_blend_epi32(better, best_index, pair_index);
  }
  if (j < count) {
    const __mmask16 better = _mm512_cmp_ps_mask(distance(j), best_d2, _CMP_LT_OQ);
    best_index = _mm512_mask_blend_epi32(better, best_index, _mm512_set1_epi32(neighbours[j]));
  }
  return best_index;
}

template <int kDims>
void MeasurePass(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight, const float* waux,
                 int first, int lanes, const float* id_lanes, IqCandidateFits* fits) {
  const int vectors = search.n / kDims;
  const __m512 id = _mm512_loadu_ps(id_lanes);
  const __m512 scale = _mm512_div_ps(_mm512_set1_ps(1.0f), id);  // 1 / id, correctly rounded
  const __m512i top = _mm512_set1_epi32(search.max_q - 1);
  const float* points = grid.FloatPoints();
  __m512 sumqx = _mm512_setzero_ps(), sumq2 = _mm512_setzero_ps();
  for (int k = 0; k < vectors; ++k) {
    const float* xk = xval + kDims * k;
    __m512i code = _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int i = 0; i < kDims; ++i)
      code = _mm512_or_si512(code, _mm512_sllv_epi32(LevelsOf(id, xk[i], top), _mm512_set1_epi32(grid.bits() * i)));
    // Each live lane's map entry: its grid index, or negative off the grid. Padding lanes get 0
    // (point 0, dropped later).
    const __mmask16 live = static_cast<__mmask16>((1u << lanes) - 1);
    __m512i index = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, code, grid.Map(), 4);
    const __mmask16 was_off_grid = _mm512_mask_cmplt_epi32_mask(live, index, _mm512_setzero_si512());
    alignas(64) uint32_t codes[kLanes];
    _mm512_store_si512(codes, code);
    for (__mmask16 off_grid = was_off_grid; off_grid != 0;) {
      const __m512i shared = _mm512_set1_epi32(static_cast<int>(codes[__builtin_ctz(off_grid)]));
      const __mmask16 same = _mm512_mask_cmpeq_epi32_mask(off_grid, code, shared);
      const __m512i found = SearchNeighbours<kDims>(grid, codes[__builtin_ctz(off_grid)], xk, waux + kDims * k, scale);
      index = _mm512_mask_blend_epi32(same, index, found);
      off_grid = static_cast<__mmask16>(off_grid & ~same);
    }
    alignas(64) int32_t lane_index[kLanes];
    _mm512_store_si512(lane_index, index);
    for (int j = 0; j < lanes; ++j) {
      fits->index[first + j][k] = static_cast<int16_t>(lane_index[j]);
      fits->on_grid[first + j][k] = !(was_off_grid >> j & 1);
    }
    const __m512i offsets = _mm512_mullo_epi32(index, _mm512_set1_epi32(kDims));
#pragma GCC unroll 8
    for (int i = 0; i < kDims; ++i) {
      const __m512 q = _mm512_i32gather_ps(offsets, points + i, 4);
      const float wi = weight[kDims * k + i];
      sumqx = _mm512_add_ps(sumqx, _mm512_mul_ps(_mm512_set1_ps(wi * xk[i]), q));
      sumq2 = _mm512_add_ps(sumq2, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(wi), q), q));
    }
  }
  alignas(64) float qx[kLanes], q2[kLanes];
  _mm512_store_ps(qx, sumqx);
  _mm512_store_ps(q2, sumq2);
  for (int j = 0; j < lanes; ++j) {
    fits->sumqx[first + j] = qx[j];
    fits->sumq2[first + j] = q2[j];
  }
}

}  // namespace

void MeasureIqCandidatesAvx512(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight,
                               const float* waux, float top, IqCandidateFits* fits) {
  const int candidates = 2 * search.half_tries + 1;
  for (int first = 0; first < candidates; first += kLanes) {
    const int lanes = candidates - first < kLanes ? candidates - first : kLanes;
    alignas(64) float id[kLanes];
    for (int j = 0; j < kLanes; ++j) {
      const int c = first + j < candidates ? first + j : candidates - 1;
      id[j] = (2 * search.max_q - 1 + (c - search.half_tries) * search.step) / top;
    }
    if (grid.dims() == 4)
      MeasurePass<4>(grid, search, xval, weight, waux, first, lanes, id, fits);
    else
      MeasurePass<8>(grid, search, xval, weight, waux, first, lanes, id, fits);
  }
}

}  // namespace modelsmith
