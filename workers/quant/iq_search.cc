#include "workers/quant/iq_search.h"

#include <emmintrin.h>

#include <algorithm>
#include <cstring>

#include "workers/quant/simd_avx2.h"

namespace modelsmith {
namespace {

// Levels of `count` values (a multiple of 4) at inverse scale `id`, clamped to the grid's range:
// nearest_int(0.5 * (id * x - 1)) with ggml's 1.5 * 2^23 rounding, four values at a time (SSE2;
// the same operations, so the same roundings, as the scalar formula).
void LevelsAt(const float* xval, int count, float id, int max_q, int8_t* L) {
  const __m128 vid = _mm_set1_ps(id);
  const __m128 one = _mm_set1_ps(1.0f), half = _mm_set1_ps(0.5f), magic = _mm_set1_ps(12582912.0f);
  const __m128i mantissa = _mm_set1_epi32(0x007FFFFF), bias = _mm_set1_epi32(0x00400000);
  const __m128i zero = _mm_setzero_si128(), top = _mm_set1_epi32(max_q - 1);
  alignas(16) int32_t levels[4];
  for (int i = 0; i < count; i += 4) {
    const __m128 v = _mm_mul_ps(half, _mm_sub_ps(_mm_mul_ps(vid, _mm_loadu_ps(xval + i)), one));
    __m128i l = _mm_sub_epi32(_mm_and_si128(_mm_castps_si128(_mm_add_ps(v, magic)), mantissa), bias);
    // clamp to [0, max_q - 1] (SSE2 has no 32-bit min/max)
    l = _mm_and_si128(l, _mm_cmpgt_epi32(l, zero));
    const __m128i over = _mm_cmpgt_epi32(l, top);
    l = _mm_or_si128(_mm_andnot_si128(over, l), _mm_and_si128(over, top));
    _mm_store_si128(reinterpret_cast<__m128i*>(levels), l);
    for (int j = 0; j < 4; ++j) L[i + j] = static_cast<int8_t>(levels[j]);
  }
}

float WeightedFit(int n, const float* xval, const float* weight, const int8_t* L, float* sumq2_out) {
  float sumqx = 0, sumq2 = 0;
  for (int i = 0; i < n; ++i) {
    const float q = 2 * L[i] + 1;
    sumqx += weight[i] * xval[i] * q;
    sumq2 += weight[i] * q * q;
  }
  *sumq2_out = sumq2;
  return sumqx;
}

}  // namespace

void MeasureIqCandidatesScalar(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight,
                               const float* waux, float top, IqCandidateFits* fits) {
  const int dims = grid.dims();
  const int vectors = search.n / dims;
  int8_t Laux[32];
  for (int c = 0; c <= 2 * search.half_tries; ++c) {
    const int is = c - search.half_tries;
    const float id = (2 * search.max_q - 1 + is * search.step) / top;
    const float this_scale = 1 / id;
    LevelsAt(xval, search.n, id, search.max_q, Laux);
    for (int k = 0; k < vectors; ++k) {
      const uint32_t u = grid.CodeOf(Laux + dims * k);
      int index = grid.IndexOf(u);
      fits->on_grid[c][k] = index >= 0;
      if (index < 0) index = grid.BestNeighbour(u, xval + dims * k, waux + dims * k, this_scale, Laux + dims * k);
      fits->index[c][k] = static_cast<int16_t>(index);
    }
    fits->sumqx[c] = WeightedFit(search.n, xval, weight, Laux, &fits->sumq2[c]);
  }
}

float IqSnapSearch(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight,
                   const float* waux, float top, float scale, int8_t* L) {
  const int dims = grid.dims();
  const int vectors = search.n / dims;
  IqCandidateFits fits;
  if (CpuHasAvx512())
    MeasureIqCandidatesAvx512(grid, search, xval, weight, waux, top, &fits);
  else if (CpuHasAvx2Fma16c())
    MeasureIqCandidatesAvx2(grid, search, xval, weight, waux, top, &fits);
  else
    MeasureIqCandidatesScalar(grid, search, xval, weight, waux, top, &fits);
  bool on_grid[8];
  std::fill(on_grid, on_grid + vectors, search.initially_on_grid);
  float best = 0;
  int chosen = -1;
  for (int c = 0; c <= 2 * search.half_tries; ++c) {
    const float sumqx = fits.sumqx[c], sumq2 = fits.sumq2[c];
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      scale = sumqx / sumq2;
      best = scale * sumqx;
      chosen = c;
    }
  }
  if (chosen >= 0) {
    for (int k = 0; k < vectors; ++k) {
      const int8_t* point = grid.Point(fits.index[chosen][k]);
      for (int i = 0; i < dims; ++i) L[dims * k + i] = static_cast<int8_t>(point[i] >> 1);  // 2l + 1 -> l
      on_grid[k] = fits.on_grid[chosen][k];
    }
  }
  const bool any_off_grid = std::count(on_grid, on_grid + vectors, false) > 0;
  const bool resnap = search.resnap == IqSearch::Resnap::kAllAlways ? scale > 0 : any_off_grid && scale > 0;
  if (!resnap) return scale;
  const float id = 1 / scale;
  for (int k = 0; k < vectors; ++k) {
    if (search.resnap == IqSearch::Resnap::kOffGridVectors && on_grid[k]) continue;
    LevelsAt(xval + dims * k, dims, id, search.max_q, L + dims * k);
    const uint32_t u = grid.CodeOf(L + dims * k);
    if (grid.IndexOf(u) < 0) grid.BestNeighbour(u, xval + dims * k, waux + dims * k, scale, L + dims * k);
  }
  float sumq2 = 0;
  const float sumqx = WeightedFit(search.n, xval, weight, L, &sumq2);
  if (sumq2 > 0) scale = sumqx / sumq2;
  return scale;
}

}  // namespace modelsmith
