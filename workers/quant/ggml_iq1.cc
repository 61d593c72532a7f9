#include "workers/quant/ggml_iq1.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "workers/quant/half.h"
#include "workers/quant/iq_grid.h"
#include "workers/quant/qkx2_search.h"

namespace modelsmith {
namespace {

constexpr int kQK = 256;
constexpr float kDelta = 0.125f;
constexpr float kShiftUp[3] = {-1 + kDelta, kDelta, 1 + kDelta};
constexpr float kShiftDown[3] = {-1 - kDelta, -kDelta, 1 - kDelta};
constexpr float kIQ1SGroupMaxEps = 1e-12f;
constexpr float kIQ1MGroupMaxEps = 1e-7f;

float SumSquares(const float* x) {
  float sumx2 = 0;
  for (int i = 0; i < kQK; ++i) sumx2 += x[i] * x[i];
  return sumx2;
}

void Weights(const float* xb, const float* qw, float sigma2, int n, float* weight) {
  for (int i = 0; i < n; ++i) weight[i] = qw ? qw[i] * std::sqrt(sigma2 + xb[i] * xb[i]) : xb[i] * xb[i];
}

float MaxAbs(const float* xb, int n) {
  float max = std::fabs(xb[0]);
  for (int i = 1; i < n; ++i) max = std::max(max, std::fabs(xb[i]));
  return max;
}

// The group's element indices in ascending order of value, ties in index order.
void SortedOrder(const float* xb, int n, int* order) {
  for (int j = 0; j < n; ++j) order[j] = j;
  std::stable_sort(order, order + n, [&](int a, int b) { return xb[a] < xb[b]; });
}

// Levels 0/1/2 for the elements below cut i1, between the cuts, and from i2 on.
void LevelsFromCuts(const int* order, int n, int i1, int i2, int8_t* L) {
  for (int j = 0; j < n; ++j) L[order[j]] = static_cast<int8_t>(j < i1 ? 0 : j < i2 ? 1 : 2);
}

// The grid point among an off-grid code's neighbours nearest the group at `scale` with the
// shifted level values `xg` (ggml's iq1_find_best_neighbour2); its levels go to L.
int BestNeighbour(const IqGrid& grid, uint32_t code, const float* xval, const float* weight, float scale,
                  const float* xg, int8_t* L) {
  int count = 0;
  const uint16_t* neighbours = grid.Neighbours(code, &count);
  float best_score = FLT_MAX;
  int best = neighbours[0];
  for (int j = 0; j < count; ++j) {
    const int8_t* pg = grid.Point(neighbours[j]);
    float d2 = 0;
    for (int i = 0; i < 8; ++i) {
      const float diff = scale * xg[(pg[i] - 1) / 2] - xval[i];
      d2 += weight[i] * diff * diff;
    }
    if (d2 < best_score) {
      best_score = d2;
      best = neighbours[j];
    }
  }
  const int8_t* pg = grid.Point(best);
  for (int i = 0; i < 8; ++i) L[i] = static_cast<int8_t>((pg[i] - 1) / 2);
  return best;
}

// Snaps each 8-vector of L to the grid (xg(k): the level values of vector k); when one was off
// the grid, refits the scale over the snapped points. Fills index[].
float SnapToGrid(const IqGrid& grid, const float* xb, const float* weight, int n, float scale,
                 const float* (*xg)(int k, int shift), int shift, int8_t* L, uint16_t* index) {
  bool all_on_grid = true;
  for (int k = 0; k < n / 8; ++k) {
    const uint32_t u = grid.CodeOf(L + 8 * k);
    int grid_index = grid.IndexOf(u);
    if (grid_index < 0) {
      all_on_grid = false;
      grid_index = BestNeighbour(grid, u, xb + 8 * k, weight + 8 * k, scale, xg(k, shift), L + 8 * k);
    }
    index[k] = static_cast<uint16_t>(grid_index);
  }
  if (all_on_grid) return scale;
  float sumqx = 0, sumq2 = 0;
  for (int k = 0; k < n / 8; ++k) {
    const float* xx = xg(k, shift);
    const int8_t* pg = grid.Point(index[k]);
    for (int j = 0; j < 8; ++j) {
      const float w = weight[8 * k + j];
      const float q = xx[(pg[j] - 1) / 2];
      sumqx += w * q * xb[8 * k + j];
      sumq2 += w * q * q;
    }
  }
  return sumqx > 0 && sumq2 > 0 ? sumqx / sumq2 : scale;
}

// IQ1_S: one shift for the whole group (+1 up, -1 down).
const float* ShiftOfGroup(int /*k*/, int shift) { return shift == 1 ? kShiftUp : kShiftDown; }
// IQ1_M: shift code 0..3, bit 1 for the first 8-vector (set: down), bit 0 for the second.
const float* ShiftOfVector(int k, int code) {
  if (k == 0) return code < 2 ? kShiftUp : kShiftDown;
  return code % 2 == 0 ? kShiftUp : kShiftDown;
}

}  // namespace

void QuantizeRowIQ1_S(const float* x, size_t n, const float* qw, uint8_t* out) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ1S);
  constexpr int kBlock = 32;
  float weight[kBlock], sumx[kBlock + 1], sumw[kBlock + 1], scales[8];
  int8_t L[kBlock], shifts[8];
  int order[kBlock];
  uint16_t index[4];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 50) {
    // Layout: d (FP16), qs[32] (low 8 index bits), qh uint16[8] (3 x 3 high bits, scale, shift).
    std::memset(out, 0, 50);
    uint16_t qh[8] = {};
    const float sigma2 = 2 * SumSquares(x) / kQK;
    float max_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = x + kBlock * ib;
      Weights(xb, qw + kQK * b + kBlock * ib, sigma2, kBlock, weight);
      const float max = MaxAbs(xb, kBlock);
      scales[ib] = 0;
      shifts[ib] = 1;
      if (max < kIQ1SGroupMaxEps) continue;
      SortedOrder(xb, kBlock, order);
      sumx[0] = sumw[0] = 0;
      for (int j = 0; j < kBlock; ++j) {
        sumx[j + 1] = sumx[j] + weight[order[j]] * xb[order[j]];
        sumw[j + 1] = sumw[j] + weight[order[j]];
      }
      float best_score = -FLT_MAX, scale = max;
      int besti1 = -1, besti2 = -1, best_shift = 0;
      for (int i1 = 0; i1 <= kBlock; ++i1) {
        for (int i2 = i1; i2 <= kBlock; ++i2) {
          for (const float* xs : {kShiftUp, kShiftDown}) {
            const float sumqx =
                (sumx[i1] - sumx[0]) * xs[0] + (sumx[i2] - sumx[i1]) * xs[1] + (sumx[kBlock] - sumx[i2]) * xs[2];
            const float sumq2 = (sumw[i1] - sumw[0]) * xs[0] * xs[0] + (sumw[i2] - sumw[i1]) * xs[1] * xs[1] +
                                (sumw[kBlock] - sumw[i2]) * xs[2] * xs[2];
            if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
              scale = sumqx / sumq2;
              best_score = scale * sumqx;
              besti1 = i1;
              besti2 = i2;
              best_shift = xs == kShiftUp ? 1 : -1;
            }
          }
        }
      }
      if (besti1 < 0 || besti2 < 0 || best_shift == 0) continue;
      LevelsFromCuts(order, kBlock, besti1, besti2, L);
      if (scale < 0) {
        for (int j = 0; j < kBlock; ++j) L[j] = static_cast<int8_t>(2 - L[j]);
        scale = -scale;
        best_shift = -best_shift;
      }
      scale = SnapToGrid(grid, xb, weight, kBlock, scale, ShiftOfGroup, best_shift, L, index);
      uint16_t h = 0;
      for (int k = 0; k < 4; ++k) {
        out[2 + 4 * ib + k] = static_cast<uint8_t>(index[k] & 255);
        h = static_cast<uint16_t>(h | ((index[k] >> 8) << (3 * k)));
      }
      qh[ib] = h;
      scales[ib] = scale;
      shifts[ib] = static_cast<int8_t>(best_shift);
      max_scale = std::max(max_scale, scale);
    }
    if (max_scale) {
      const float d = max_scale / 15;
      StoreFp16(out, d * 1.125f);
      const float id = 1 / d;
      for (int ib = 0; ib < 8; ++ib) {
        int l = std::clamp(GgmlNearestInt(0.5f * (id * scales[ib] - 1)), 0, 7);
        if (shifts[ib] == -1) l |= 8;
        qh[ib] = static_cast<uint16_t>(qh[ib] | (l << 12));
      }
    }
    std::memcpy(out + 34, qh, 16);
  }
}

void QuantizeRowIQ1_M(const float* x, size_t n, const float* qw, uint8_t* out) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ1S);
  constexpr int kBlock = 16;
  constexpr uint8_t kShiftMasks[4] = {0x00, 0x80, 0x08, 0x88};
  float weight[kBlock], scales[16];
  int8_t L[kBlock], shifts[16];
  int order[kBlock];
  uint16_t index[2];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 56) {
    // Layout: qs[32] (low 8 index bits), qh[16] (3 high bits + shift bit per 8-vector), scales
    // as uint16[4]: 3-bit group scales, the FP16 super-block scale in the top nibbles.
    std::memset(out, 0, 56);
    uint8_t* qs = out;
    uint8_t* qh = out + 32;
    uint16_t sc[4] = {};
    const float sigma2 = 2 * SumSquares(x) / kQK;
    float max_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float* xb = x + kBlock * ib;
      Weights(xb, qw ? qw + kQK * b + kBlock * ib : nullptr, sigma2, kBlock, weight);
      const float max = MaxAbs(xb, kBlock);
      scales[ib] = 0;
      shifts[ib] = 0;
      if (max < kIQ1MGroupMaxEps) continue;
      SortedOrder(xb, kBlock, order);
      float best_score = -FLT_MAX, scale = max;
      int besti1 = -1, besti2 = -1, best_k = -1;
      for (int i1 = 0; i1 <= kBlock; ++i1) {
        for (int i2 = i1; i2 <= kBlock; ++i2) {
          // The four shift combinations (first / second 8-vector up or down), each summed in
          // sorted order as ggml sums them.
          float sumqx[4] = {}, sumq2[4] = {};
          for (int j = 0; j < kBlock; ++j) {
            const int i = order[j];
            const int level = j < i1 ? 0 : j < i2 ? 1 : 2;
            for (int k = 0; k < 4; ++k) {
              const float q = (i < kBlock / 2 ? ShiftOfVector(0, k) : ShiftOfVector(1, k))[level];
              sumqx[k] += weight[i] * q * xb[i];
              sumq2[k] += weight[i] * q * q;
            }
          }
          for (int k = 0; k < 4; ++k) {
            if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best_score * sumq2[k]) {
              scale = sumqx[k] / sumq2[k];
              best_score = scale * sumqx[k];
              besti1 = i1;
              besti2 = i2;
              best_k = k;
            }
          }
        }
      }
      if (besti1 < 0 || besti2 < 0 || best_k < 0) continue;
      LevelsFromCuts(order, kBlock, besti1, besti2, L);
      if (scale < 0) {
        for (int j = 0; j < kBlock; ++j) L[j] = static_cast<int8_t>(2 - L[j]);
        scale = -scale;
        best_k = 3 - best_k;
      }
      scale = SnapToGrid(grid, xb, weight, kBlock, scale, ShiftOfVector, best_k, L, index);
      qs[2 * ib] = static_cast<uint8_t>(index[0] & 255);
      qs[2 * ib + 1] = static_cast<uint8_t>(index[1] & 255);
      qh[ib] = static_cast<uint8_t>((index[0] >> 8) | ((index[1] >> 8) << 4));
      scales[ib] = scale;
      shifts[ib] = static_cast<int8_t>(best_k);
      max_scale = std::max(max_scale, scale);
    }
    if (!max_scale) continue;
    float d = max_scale / 15;
    const float id = 1 / d;
    // The super-block scale refitted over the stored group scales and points.
    float sumqx = 0, sumq2 = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const int l = std::clamp(GgmlNearestInt(0.5f * (id * scales[ib] - 1)), 0, 7);
      sc[ib / 4] = static_cast<uint16_t>(sc[ib / 4] | (l << (3 * (ib % 4))));
      qh[ib] |= kShiftMasks[shifts[ib]];
      const float* xb = x + kBlock * ib;
      Weights(xb, qw ? qw + kQK * b + kBlock * ib : nullptr, sigma2, kBlock, weight);
      for (int k = 0; k < 2; ++k) {
        const float* xx = ShiftOfVector(k, shifts[ib]);
        const int8_t* pg = grid.Point(qs[2 * ib + k] + ((qh[ib] << (8 - 4 * k)) & 0x700));
        for (int j = 0; j < 8; ++j) {
          const float w = weight[8 * k + j];
          const float q = xx[(pg[j] - 1) / 2] * (2 * l + 1);
          sumqx += w * q * xb[8 * k + j];
          sumq2 += w * q * q;
        }
      }
    }
    if (sumq2 > 0) d = sumqx / sumq2;
    const uint16_t s = Fp32ToFp16(d * 1.1125f);
    sc[0] = static_cast<uint16_t>(sc[0] | ((s & 0x000f) << 12));
    sc[1] = static_cast<uint16_t>(sc[1] | ((s & 0x00f0) << 8));
    sc[2] = static_cast<uint16_t>(sc[2] | ((s & 0x0f00) << 4));
    sc[3] = static_cast<uint16_t>(sc[3] | (s & 0xf000));
    std::memcpy(out + 48, sc, 8);
  }
}

void DequantizeRowIQ1_S(const uint8_t* in, size_t n, float* y) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ1S);
  for (size_t b = 0; b < n / kQK; ++b, in += 50) {
    const float d = LoadFp16(in);
    const uint8_t* qs = in + 2;
    for (int ib = 0; ib < 8; ++ib, qs += 4) {
      uint16_t qh;
      std::memcpy(&qh, in + 34 + 2 * ib, 2);
      const float dl = d * (2 * ((qh >> 12) & 7) + 1);
      const float delta = qh & 0x8000 ? -kDelta : kDelta;
      for (int l = 0; l < 4; ++l, y += 8) {
        const int8_t* g = grid.Decoded(qs[l] | (((qh >> (3 * l)) & 7) << 8));
        for (int j = 0; j < 8; ++j) y[j] = dl * (g[j] + delta);
      }
    }
  }
}

void DequantizeRowIQ1_M(const uint8_t* in, size_t n, float* y) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ1S);
  for (size_t b = 0; b < n / kQK; ++b, in += 56) {
    uint16_t sc[4];
    std::memcpy(sc, in + 48, 8);
    const uint16_t bits =
        static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
    const float d = Fp16ToFp32(bits);
    const uint8_t* qs = in;
    const uint8_t* qh = in + 32;
    for (int ib = 0; ib < 8; ++ib, qs += 4, qh += 2) {
      const float dl1 = d * (2 * ((sc[ib / 2] >> (6 * (ib % 2))) & 0x7) + 1);
      const float dl2 = d * (2 * ((sc[ib / 2] >> (6 * (ib % 2) + 3)) & 0x7) + 1);
      const int idx[4] = {qs[0] | ((qh[0] << 8) & 0x700), qs[1] | ((qh[0] << 4) & 0x700),
                          qs[2] | ((qh[1] << 8) & 0x700), qs[3] | ((qh[1] << 4) & 0x700)};
      const float delta[4] = {qh[0] & 0x08 ? -kDelta : kDelta, qh[0] & 0x80 ? -kDelta : kDelta,
                              qh[1] & 0x08 ? -kDelta : kDelta, qh[1] & 0x80 ? -kDelta : kDelta};
      for (int l = 0; l < 4; ++l, y += 8) {
        const int8_t* g = grid.Decoded(idx[l]);
        for (int j = 0; j < 8; ++j) y[j] = (l < 2 ? dl1 : dl2) * (g[j] + delta[l]);
      }
    }
  }
}

}  // namespace modelsmith
