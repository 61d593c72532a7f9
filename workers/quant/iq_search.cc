#include "workers/quant/iq_search.h"

#include <algorithm>
#include <cstring>

#include "workers/quant/qkx2_search.h"

namespace modelsmith {
namespace {

// Levels of one vector at inverse scale `id`, clamped to the grid's range.
void LevelsAt(const float* xval, int dims, float id, int max_q, int8_t* L) {
  for (int i = 0; i < dims; ++i) {
    L[i] = static_cast<int8_t>(std::clamp(GgmlNearestInt(0.5f * (id * xval[i] - 1)), 0, max_q - 1));
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

float IqSnapSearch(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight,
                   const float* waux, float top, float scale, int8_t* L) {
  const int dims = grid.dims();
  const int vectors = search.n / dims;
  int8_t Laux[32];
  bool on_grid[8], on_grid_aux[8];
  std::fill(on_grid, on_grid + vectors, search.initially_on_grid);
  float best = 0;
  for (int is = -search.half_tries; is <= search.half_tries; ++is) {
    const float id = (2 * search.max_q - 1 + is * search.step) / top;
    const float this_scale = 1 / id;
    for (int k = 0; k < vectors; ++k) {
      LevelsAt(xval + dims * k, dims, id, search.max_q, Laux + dims * k);
      const uint32_t u = grid.CodeOf(Laux + dims * k);
      on_grid_aux[k] = grid.IndexOf(u) >= 0;
      if (!on_grid_aux[k]) grid.BestNeighbour(u, xval + dims * k, waux + dims * k, this_scale, Laux + dims * k);
    }
    float sumq2 = 0;
    const float sumqx = WeightedFit(search.n, xval, weight, Laux, &sumq2);
    if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
      scale = sumqx / sumq2;
      best = scale * sumqx;
      std::memcpy(L, Laux, search.n);
      std::copy(on_grid_aux, on_grid_aux + vectors, on_grid);
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
