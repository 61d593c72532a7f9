#include "workers/quant/qkx2_search.h"

#include <algorithm>
#include <cmath>

#include "workers/quant/simd_avx2.h"

namespace modelsmith {

Qkx2Start Qkx2FirstGuess(int n, int nmax, const float* x, const float* weights, uint8_t* L, bool use_mad) {
  Qkx2Start s{x[0], x[0], weights[0], weights[0] * x[0], 0, 0, false};
  for (int i = 1; i < n; ++i) {
    if (x[i] < s.min) s.min = x[i];
    if (x[i] > s.max) s.max = x[i];
    const float w = weights[i];
    s.sum_w += w;
    s.sum_x += w * x[i];
  }
  if (s.min > 0) s.min = 0;
  if (s.max == s.min) {
    std::fill(L, L + n, 0);
    s.constant = true;
    return s;
  }
  const float iscale = nmax / (s.max - s.min);
  s.scale = 1 / iscale;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(std::clamp(GgmlNearestInt(iscale * (x[i] - s.min)), 0, nmax));
    float diff = s.scale * L[i] + s.min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    s.best_error += weights[i] * diff;
  }
  return s;
}

float MakeQkx2QuantsScalar(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                           uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
  const Qkx2Start start = Qkx2FirstGuess(n, nmax, x, weights, L, use_mad);
  if (start.constant) {
    *the_min = -start.min;
    return 0.0f;
  }
  float min = start.min, scale = start.scale, best_error = start.best_error;
  const float max = start.max, sum_w = start.sum_w, sum_x = start.sum_x;
  for (int is = 0; nstep >= 1 && is <= nstep; ++is) {  // ggml: no candidates when nstep < 1
    const float iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(GgmlNearestInt(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        std::copy(Laux, Laux + n, L);
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

float MakeQkx2Quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, uint8_t* Laux,
                     float rmin, float rdelta, int nstep, bool use_mad) {
  if (CpuHasAvx2Fma16c())
    return MakeQkx2QuantsAvx2(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad);
  return MakeQkx2QuantsScalar(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, use_mad);
}

void MakeQkx2QuantsGroups(int groups, int n, int nmax, const float* x, const float* weights, uint8_t* L, float* scales,
                          float* the_mins, float rmin, float rdelta, int nstep, bool use_mad) {
  const bool avx2 = CpuHasAvx2Fma16c();
  uint8_t Laux[32];
  for (int g = 0; g < groups; g += 8) {
    const size_t at = static_cast<size_t>(g) * n;
    if (avx2) {
      MakeQkx2Quants8GroupsAvx2(n, nmax, x + at, weights + at, L + at, scales + g, the_mins + g, rmin, rdelta, nstep,
                                use_mad);
      continue;
    }
    for (int k = g; k < g + 8; ++k) {
      const size_t group_at = static_cast<size_t>(k) * n;
      scales[k] = MakeQkx2QuantsScalar(n, nmax, x + group_at, weights + group_at, L + group_at, &the_mins[k], Laux,
                                       rmin, rdelta, nstep, use_mad);
    }
  }
}

}  // namespace modelsmith
