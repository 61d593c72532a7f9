#include "workers/quant/ggml_imatrix.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "workers/quant/half.h"
#include "workers/quant/kquant_blocks.h"
#include "workers/quant/qkx2_search.h"
#include "workers/quant/scale_search.h"

namespace modelsmith {
namespace {

constexpr int kQK = kquant::kQK;
constexpr int kLegacyQK = 32;

// The legacy types weigh against the whole row's mean square.
float RowMeanSquare(const float* x, size_t n) {
  float sum_x2 = 0;
  for (size_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / static_cast<float>(n);
}

// qw * sqrt(sigma2 + x^2) for `count` values.
void ImportanceWeights(const float* x, const float* qw, float sigma2, int count, float* weight) {
  for (int j = 0; j < count; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + x[j] * x[j]);
}

// The 5th bits of 32 five-bit levels, element j at bit j, and the low nibbles packed in pairs.
void PackFiveBit(const uint8_t* L, uint8_t* qh_out, uint8_t* qs) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
    qh |= ((L[j] & 0x10u) >> 4) << j;
    qh |= ((L[j + 16] & 0x10u) >> 4) << (j + 16);
  }
  std::memcpy(qh_out, &qh, 4);
}

// Q4_0/Q5_0: a symmetric weighted search per block; returns the scale, L in [0, 2*nmax).
float SymmetricBlock(const float* xb, const float* qw, float sigma2, int nmax, uint8_t* L) {
  float weight[kLegacyQK];
  int8_t levels[kLegacyQK];
  ImportanceWeights(xb, qw, sigma2, kLegacyQK, weight);
  const float d = MakeQxQuants(kLegacyQK, nmax, xb, levels, weight);
  for (int j = 0; j < kLegacyQK; ++j) L[j] = static_cast<uint8_t>(levels[j]);
  return d;
}

// Q4_1/Q5_1: scale and min by make_qkx3_quants; returns the scale, -min in *neg_min.
float AffineBlock(const float* xb, const float* qw, float sigma2, int nmax, uint8_t* L, float* neg_min) {
  float weight[kLegacyQK];
  uint8_t Laux[kLegacyQK];
  ImportanceWeights(xb, qw, sigma2, kLegacyQK, weight);
  return MakeQkx3Quants(kLegacyQK, nmax, xb, weight, L, neg_min, Laux, -0.9f, 0.05f, 36, false);
}

// K-quants weigh against their super-block: sum x^2 over 256 values.
float SuperBlockSumSquares(const float* x) {
  float sum_x2 = 0;
  for (int l = 0; l < kQK; ++l) sum_x2 += x[l] * x[l];
  return sum_x2;
}

// Q4_K/Q5_K: eight 32-element sub-blocks by make_qkx3_quants, their scales and mins by
// make_qp_quants against the sub-blocks' weight sums.
void QuantizeK4Weighted(const float* x, const float* qw, int nmax, uint8_t* block, int d_at, int dmin_at, int scales_at,
                        uint8_t* L) {
  const float sigma2 = 2 * SuperBlockSumSquares(x) / kQK;
  float weights[kQK], sw[8], mins[8], scales[8];
  uint8_t Ls[8], Lm[8];
  for (int j = 0; j < 8; ++j) {
    ImportanceWeights(x + 32 * j, qw + 32 * j, sigma2, 32, weights + 32 * j);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += weights[32 * j + l];
    sw[j] = sumw;
  }
  // make_qkx3_quants with explicit weights is make_qkx2_quants (scale_search.h).
  MakeQkx2QuantsGroups(8, 32, nmax, x, weights, L, scales, mins, -0.9f, 0.05f, 36, false);
  const float d_block = MakeQpQuants(8, 63, scales, Ls, sw);
  const float m_block = MakeQpQuants(8, 63, mins, Lm, sw);
  for (int j = 0; j < 8; ++j) {
    Ls[j] = std::min<uint8_t>(63, Ls[j]);
    Lm[j] = std::min<uint8_t>(63, Lm[j]);
  }
  kquant::PackScaleMinK4(Ls, Lm, block + scales_at);
  StoreFp16(block + d_at, d_block);
  StoreFp16(block + dmin_at, m_block);
  kquant::RequantizeK4(x, block + d_at, block + dmin_at, block + scales_at, nmax, L);
}

}  // namespace

void QuantizeRowQ4_0Weighted(const float* x, size_t n, const float* qw, uint8_t* out) {
  const float sigma2 = RowMeanSquare(x, n);
  uint8_t L[kLegacyQK];
  for (size_t b = 0; b < n / kLegacyQK; ++b, x += kLegacyQK, qw += kLegacyQK, out += 18) {
    StoreFp16(out, SymmetricBlock(x, qw, sigma2, 8, L));
    for (int j = 0; j < 16; ++j) out[2 + j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

void QuantizeRowQ4_1Weighted(const float* x, size_t n, const float* qw, uint8_t* out) {
  const float sigma2 = RowMeanSquare(x, n);
  uint8_t L[kLegacyQK];
  for (size_t b = 0; b < n / kLegacyQK; ++b, x += kLegacyQK, qw += kLegacyQK, out += 20) {
    float neg_min;
    StoreFp16(out, AffineBlock(x, qw, sigma2, 15, L, &neg_min));
    StoreFp16(out + 2, -neg_min);
    for (int j = 0; j < 16; ++j) out[4 + j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
  }
}

void QuantizeRowQ5_0Weighted(const float* x, size_t n, const float* qw, uint8_t* out) {
  const float sigma2 = RowMeanSquare(x, n);
  uint8_t L[kLegacyQK];
  for (size_t b = 0; b < n / kLegacyQK; ++b, x += kLegacyQK, qw += kLegacyQK, out += 22) {
    StoreFp16(out, SymmetricBlock(x, qw, sigma2, 16, L));
    PackFiveBit(L, out + 2, out + 6);
  }
}

void QuantizeRowQ5_1Weighted(const float* x, size_t n, const float* qw, uint8_t* out) {
  const float sigma2 = RowMeanSquare(x, n);
  uint8_t L[kLegacyQK];
  for (size_t b = 0; b < n / kLegacyQK; ++b, x += kLegacyQK, qw += kLegacyQK, out += 24) {
    float neg_min;
    StoreFp16(out, AffineBlock(x, qw, sigma2, 31, L, &neg_min));
    StoreFp16(out + 2, -neg_min);
    PackFiveBit(L, out + 4, out + 8);
  }
}

void QuantizeRowQ2_KWeighted(const float* x, size_t n, const float* qw, uint8_t* out) {
  using namespace kquant::q2k;  // NOLINT: block offsets
  uint8_t L[kQK], Ls[16], Lm[16];
  float mins[16], scales[16], sw[16], weight[kQK];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, qw += kQK, out += kBytes) {
    const float sigma2 = SuperBlockSumSquares(x) / kQK;
    for (int j = 0; j < 16; ++j) {
      ImportanceWeights(x + 16 * j, qw + 16 * j, sigma2, 16, weight + 16 * j);
      sw[j] = 0;
      for (int l = 0; l < 16; ++l) sw[j] += weight[16 * j + l];
    }
    MakeQkx2QuantsGroups(16, 16, 3, x, weight, L, scales, mins, -0.9f, 0.05f, 36, false);
    StoreFp16(out + kD, MakeQpQuants(16, 15, scales, Ls, sw));
    StoreFp16(out + kDmin, MakeQpQuants(16, 15, mins, Lm, sw));
    for (int j = 0; j < 16; ++j) out[kScales + j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    kquant::FinishQ2_K(x, L, out);
  }
}

void QuantizeRowQ3_KWeighted(const float* x, size_t n, const float* qw, uint8_t* out) {
  int8_t L[kQK], Ls[16];
  float scales[16], weight[kQK], sw[16];
  int scale_levels[16];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, qw += kQK, out += kquant::q3k::kBytes) {
    const float sigma2 = 2 * SuperBlockSumSquares(x) / kQK;
    for (int j = 0; j < 16; ++j) {
      ImportanceWeights(x + 16 * j, qw + 16 * j, sigma2, 16, weight + 16 * j);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weight[16 * j + l];
      sw[j] = sumw;
    }
    MakeQxQuantsGroups(16, 16, 4, x, L, weight, scales);
    StoreFp16(out + kquant::q3k::kD, MakeQxQuants(16, 32, scales, Ls, sw));
    for (int j = 0; j < 16; ++j) scale_levels[j] = Ls[j];
    kquant::FinishQ3_K(x, scale_levels, L, out);
  }
}

void QuantizeRowQ4_KWeighted(const float* x, size_t n, const float* qw, uint8_t* out) {
  using namespace kquant::q4k;  // NOLINT: block offsets
  uint8_t L[kQK];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, qw += kQK, out += kBytes) {
    QuantizeK4Weighted(x, qw, 15, out, kD, kDmin, kScales, L);
    kquant::PackQ4_KLevels(L, out);
  }
}

void QuantizeRowQ5_KWeighted(const float* x, size_t n, const float* qw, uint8_t* out) {
  using namespace kquant::q5k;  // NOLINT: block offsets
  uint8_t L[kQK];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, qw += kQK, out += kBytes) {
    QuantizeK4Weighted(x, qw, 31, out, kD, kDmin, kScales, L);
    kquant::PackQ5_KLevels(L, out);
  }
}

void QuantizeRowQ6_KWeighted(const float* x, size_t n, const float* qw, uint8_t* out) {
  int8_t L[kQK];
  float scales[16];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, qw += kQK, out += kquant::q6k::kBytes) {
    // ggml's Q6_K passes the importance values themselves, not scaled by the values' magnitude.
    MakeQxQuantsGroups(16, 16, 32, x, L, qw, scales);
    kquant::FinishQ6_K(x, scales, L, out);
  }
}

}  // namespace modelsmith
