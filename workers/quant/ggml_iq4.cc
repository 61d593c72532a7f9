#include "workers/quant/ggml_iq4.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "workers/quant/half.h"
#include "workers/quant/qkx2_search.h"
#include "workers/quant/scale_search.h"
#include "workers/quant/simd_avx2.h"

namespace modelsmith {
namespace {

// The 16 levels both types index (ggml-common.h kvalues_iq4nl), ascending.
constexpr int8_t kLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
constexpr int kTries = 7;

// The index of the level nearest x, as ggml's bisection (best_index_int8) finds it: the lower
// level when x - lower < upper - x, else the upper. Near a midpoint both differences are exact in
// float (the levels are integers), so the rule is "count the midpoints at or below x"; midpoints
// are multiples of 0.5, so that count depends only on floor(2x), looked up in a table.
// Below -128 and from 128 on, the first and last levels are nearest, which the table's ends give.
struct LevelTable {
  int8_t index_of_twice_floor[512];  // for floor(2x) in [-256, 256)
  float level_of_twice_floor[512];
  LevelTable() {
    for (int t = -256; t < 256; ++t) {
      int count = 0;
      for (int k = 0; k < 15; ++k) count += t >= kLevels[k] + kLevels[k + 1];  // 2x >= 2 * midpoint
      index_of_twice_floor[t + 256] = static_cast<int8_t>(count);
      level_of_twice_floor[t + 256] = kLevels[count];
    }
  }
};
const LevelTable kTable;

inline int NearestLevel(float x) {
  if (x <= kLevels[0]) return 0;
  if (x >= kLevels[15]) return 15;
  return kTable.index_of_twice_floor[static_cast<int>(std::floor(2 * x)) + 256];
}

// One 32-element block's scale: the weighted least-squares fit over 2 * kTries + 1 candidate
// inverse scales around the one that maps the largest magnitude to -127 (tried first, on its own).
// 0 for an all-zero block.
float BlockScale(const float* xb, const float* weight) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j) {
    const float ax = std::fabs(xb[j]);
    if (ax > amax) {
      amax = ax;
      max = xb[j];
    }
  }
  if (amax < kGroupMaxEps) return 0;
  float ids[kIq4Candidates], sumqx[kIq4Candidates], sumq2[kIq4Candidates];
  ids[0] = 1 / (-max / kLevels[0]);
  for (int itry = -kTries; itry <= kTries; ++itry) ids[1 + itry + kTries] = (itry + kLevels[0]) / max;
  if (CpuHasAvx2Fma16c())
    Iq4CandidateFitsAvx2(xb, weight, ids, sumqx, sumq2);
  else
    Iq4CandidateFitsScalar(xb, weight, ids, sumqx, sumq2);
  float d = sumq2[0] > 0 ? sumqx[0] / sumq2[0] : 0.f;
  float best = d * sumqx[0];
  for (int c = 1; c < kIq4Candidates; ++c) {
    if (sumq2[c] > 0 && sumqx[c] * sumqx[c] > best * sumq2[c]) {
      d = sumqx[c] / sumq2[c];
      best = d * sumqx[c];
    }
  }
  return d;
}

// Weights of one 32-element block: qw * sqrt(sigma2 + x^2), or x^2 without importance data.
void BlockWeights(const float* xb, const float* qw, float sigma2, float* weight) {
  for (int j = 0; j < 32; ++j) weight[j] = qw ? qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]) : xb[j] * xb[j];
}

float MeanSquareTimesTwo(const float* x, int count) {
  float sigma2 = 0;
  for (int j = 0; j < count; ++j) sigma2 += x[j] * x[j];
  return sigma2 * (2.f / count);
}

// Indices of `count` values against inverse scale `id`, packed as ggml packs them: within each
// 32 values, element j in the low nibble of byte j and element j + 16 in its high nibble.
void PackIndices(const float* x, int count, float id, uint8_t* qs) {
  uint8_t L[256];
  for (int j = 0; j < count; ++j) L[j] = static_cast<uint8_t>(NearestLevel(id * x[j]));
  for (int i = 0; i < count / 32; ++i) {
    for (int j = 0; j < 16; ++j) qs[16 * i + j] = static_cast<uint8_t>(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
  }
}

}  // namespace

void Iq4CandidateFitsScalar(const float* xb, const float* weight, const float* ids, float* sumqx, float* sumq2) {
  for (int c = 0; c < kIq4Candidates; ++c) {
    float qx = 0, q2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = kLevels[NearestLevel(ids[c] * xb[j])];
      qx += weight[j] * q * xb[j];
      q2 += weight[j] * q * q;
    }
    sumqx[c] = qx;
    sumq2[c] = q2;
  }
}

const float* Iq4LevelByTwiceFloor() { return kTable.level_of_twice_floor; }

void QuantizeRowIQ4_NL(const float* x, size_t n, const float* qw, uint8_t* out) {
  float weight[32];
  for (size_t b = 0; b < n / 32; ++b, x += 32, out += 18) {
    BlockWeights(x, qw ? qw + 32 * b : nullptr, MeanSquareTimesTwo(x, 32), weight);
    const float scale = BlockScale(x, weight);
    StoreFp16(out, scale);
    PackIndices(x, 32, scale ? 1 / scale : 0, out + 2);
  }
}

void QuantizeRowIQ4_XS(const float* x, size_t n, const float* qw, uint8_t* out) {
  float weight[32], scales[8];
  for (size_t b = 0; b < n / 256; ++b, x += 256, out += 136) {
    const float sigma2 = MeanSquareTimesTwo(x, 256);
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      BlockWeights(x + 32 * ib, qw ? qw + 256 * b + 32 * ib : nullptr, sigma2, weight);
      scales[ib] = BlockScale(x + 32 * ib, weight);
      if (std::fabs(scales[ib]) > amax_scale) {
        amax_scale = std::fabs(scales[ib]);
        max_scale = scales[ib];
      }
    }
    // Layout: d (FP16), scales_h (2 bits per sub-block), scales_l (4 bits per sub-block), qs.
    const float d = -max_scale / 32;
    StoreFp16(out, d);
    const float id = d ? 1 / d : 0.f;
    uint16_t scales_h = 0;
    uint8_t* scales_l = out + 4;
    std::memset(scales_l, 0, 4);
    for (int ib = 0; ib < 8; ++ib) {
      int l = std::clamp(GgmlNearestInt(id * scales[ib]), -32, 31);
      const float dl = d * l;
      PackIndices(x + 32 * ib, 32, dl ? 1 / dl : 0.f, out + 8 + 16 * ib);
      l += 32;
      scales_l[ib / 2] |= static_cast<uint8_t>((l & 0xF) << (4 * (ib % 2)));
      scales_h |= static_cast<uint16_t>((l >> 4) << (2 * ib));
    }
    std::memcpy(out + 2, &scales_h, 2);
  }
}

void DequantizeRowIQ4_NL(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / 32; ++b, in += 18, y += 32) {
    const float d = LoadFp16(in);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * kLevels[in[2 + j] & 0xF];
      y[j + 16] = d * kLevels[in[2 + j] >> 4];
    }
  }
}

void DequantizeRowIQ4_XS(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / 256; ++b, in += 136) {
    const float d = LoadFp16(in);
    uint16_t scales_h;
    std::memcpy(&scales_h, in + 2, 2);
    const uint8_t* qs = in + 8;
    for (int ib = 0; ib < 8; ++ib, y += 32, qs += 16) {
      const int ls = ((in[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((scales_h >> (2 * ib)) & 3) << 4);
      const float dl = d * (ls - 32);
      for (int j = 0; j < 16; ++j) {
        y[j] = dl * kLevels[qs[j] & 0xF];
        y[j + 16] = dl * kLevels[qs[j] >> 4];
      }
    }
  }
}

}  // namespace modelsmith
