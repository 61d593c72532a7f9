#include "workers/quant/ggml_iq2.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "workers/quant/half.h"
#include "workers/quant/iq_grid.h"
#include "workers/quant/iq_search.h"
#include "workers/quant/qkx2_search.h"
#include "workers/quant/scale_search.h"

namespace modelsmith {
namespace {

constexpr int kQK = 256;
constexpr int kMaxQ = 3;
constexpr float kIQ2SGroupMaxEps = 1e-8f;
constexpr IqSearch kIQ2XXSSearch{32, kMaxQ, 0.1f, 6, IqSearch::Resnap::kAllAlways, true};
constexpr IqSearch kIQ2XSSearch{16, kMaxQ, 0.1f, 9, IqSearch::Resnap::kOffGridVectors, true};

float SumSquares(const float* x) {
  float sumx2 = 0;
  for (int i = 0; i < kQK; ++i) sumx2 += x[i] * x[i];
  return sumx2;
}

// Magnitudes and sign bits of `n` values, 8 per sign byte (bit i set for a negative value).
void SplitSigns(const float* xb, int n, float* xval, uint8_t* signs) {
  for (int k = 0; k < n / 8; ++k) {
    uint8_t s = 0;
    for (int i = 0; i < 8; ++i) {
      const float v = xb[8 * k + i];
      xval[8 * k + i] = v >= 0 ? v : -v;
      if (v < 0) s |= static_cast<uint8_t>(1 << i);
    }
    signs[k] = s;
  }
}

// Seven stored sign bits per 8: an odd count of negatives flips the least important value's
// sign (and makes its magnitude negative), as ggml does.
void EvenOutSigns(const float* xb, const float* weight, int n, float* xval, uint8_t* signs) {
  for (int k = 0; k < n / 8; ++k) {
    if (__builtin_popcount(signs[k]) % 2) {
      int imin = 0;
      float min = weight[8 * k] * xb[8 * k] * xb[8 * k];
      for (int i = 1; i < 8; ++i) {
        const float ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
        if (ax < min) {
          min = ax;
          imin = i;
        }
      }
      xval[8 * k + imin] = -xval[8 * k + imin];
      signs[k] ^= static_cast<uint8_t>(1 << imin);
    }
    signs[k] &= 127;
  }
}

void Weights(const float* xb, const float* qw, float sigma2, int n, float* weight, float* waux) {
  for (int i = 0; i < n; ++i) weight[i] = qw[i] * std::sqrt(sigma2 + xb[i] * xb[i]);
  for (int i = 0; i < n; ++i) waux[i] = std::sqrt(weight[i]);
}

float MaxOf(const float* v, int n) {
  float max = v[0];
  for (int i = 1; i < n; ++i) max = std::max(max, v[i]);
  return max;
}

// The 4-bit code of a block scale against the super-block's d.
int ScaleCode(float scale, float id) { return std::clamp(GgmlNearestInt(0.5f * (id * scale - 1)), 0, 15); }

}  // namespace

void QuantizeRowIQ2_XXS(const float* x, size_t n, const float* qw, uint8_t* out) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ2XXS);
  float weight[32], waux[32], xval[32], scales[8];
  int8_t L[32];
  uint8_t signs[4];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 66) {
    // Layout: d (FP16), then per 32 elements two uint32: 4 grid indices; 4 x 7 sign bits + scale.
    uint32_t q2[16] = {};
    StoreFp16(out, 0.f);
    const float sigma2 = SumSquares(x) / kQK;
    float max_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = x + 32 * ib;
      Weights(xb, qw + kQK * b + 32 * ib, sigma2, 32, weight, waux);
      SplitSigns(xb, 32, xval, signs);
      EvenOutSigns(xb, weight, 32, xval, signs);
      const float max = MaxOf(xval, 32);
      if (max < kGroupMaxEps) {
        scales[ib] = 0;
        continue;
      }
      // The starting point: make_qp_quants' levels (0..4) and scale.
      float scale = MakeQpQuants(32, kMaxQ + 1, xval, reinterpret_cast<uint8_t*>(L), weight);
      const float eff_max = scale * kMaxQ;
      if (eff_max <= 0) {
        scales[ib] = 0;
        continue;
      }
      scale = IqSnapSearch(grid, kIQ2XXSSearch, xval, weight, waux, eff_max, scale, L);
      if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 4; ++k) signs[k] = static_cast<uint8_t>(~signs[k] & 127);
      }
      for (int k = 0; k < 4; ++k) {
        q2[2 * ib] |= static_cast<uint32_t>(grid.IndexOf(grid.CodeOf(L + 8 * k))) << (8 * k);
        q2[2 * ib + 1] |= static_cast<uint32_t>(signs[k]) << (7 * k);
      }
      scales[ib] = scale;
      max_scale = std::max(max_scale, scale);
    }
    if (!max_scale) {
      std::memset(out + 2, 0, 64);
      continue;
    }
    const float d = max_scale / 31;
    StoreFp16(out, d);
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ++ib) q2[2 * ib + 1] |= static_cast<uint32_t>(ScaleCode(scales[ib], id)) << 28;
    std::memcpy(out + 2, q2, 64);
  }
}

void QuantizeRowIQ2_XS(const float* x, size_t n, const float* qw, uint8_t* out) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ2XS);
  float weight[16], waux[16], xval[16], scales[16];
  int8_t L[16];
  uint8_t signs[2];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 74) {
    // Layout: d (FP16), 32 x uint16 (9-bit index | 7 sign bits << 9), 8 bytes of 4-bit scales.
    uint16_t q2[32] = {};
    StoreFp16(out, 0.f);
    std::memset(out + 66, 0, 8);
    const float sigma2 = SumSquares(x) / kQK;
    float max_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float* xb = x + 16 * ib;
      Weights(xb, qw + kQK * b + 16 * ib, sigma2, 16, weight, waux);
      SplitSigns(xb, 16, xval, signs);
      EvenOutSigns(xb, weight, 16, xval, signs);
      const float max = MaxOf(xval, 16);
      std::memset(L, 0, 16);
      if (max < kGroupMaxEps) {
        scales[ib] = 0;
        continue;
      }
      float scale = IqSnapSearch(grid, kIQ2XSSearch, xval, weight, waux, max, max / (2 * kMaxQ - 1), L);
      if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 2; ++k) signs[k] = static_cast<uint8_t>(~signs[k] & 127);
      }
      for (int k = 0; k < 2; ++k) {
        q2[2 * ib + k] = static_cast<uint16_t>(grid.IndexOf(grid.CodeOf(L + 8 * k)) | (signs[k] << 9));
      }
      scales[ib] = scale;
      max_scale = std::max(max_scale, scale);
    }
    if (!max_scale) {
      std::memset(out + 2, 0, 64);
      continue;
    }
    const float d = max_scale / 31;
    StoreFp16(out, d);
    const float id = 1 / d;
    for (int ib = 0; ib < 16; ++ib)
      out[66 + ib / 2] |= static_cast<uint8_t>(ScaleCode(scales[ib], id) << (4 * (ib % 2)));
    std::memcpy(out + 2, q2, 64);
  }
}

void QuantizeRowIQ2_S(const float* x, size_t n, const float* qw, uint8_t* out) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ2S);
  float weight[16], waux[16], xval[16], scales[16];
  int8_t L[16];
  uint8_t signs[2];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 82) {
    // Layout: d (FP16), qs[32] (low 8 index bits), signs[32], qh[8] (2 more bits), scales[8].
    std::memset(out, 0, 82);
    const float sigma2 = 2 * SumSquares(x) / kQK;
    float max_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float* xb = x + 16 * ib;
      if (qw != nullptr) {
        Weights(xb, qw + kQK * b + 16 * ib, sigma2, 16, weight, waux);
      } else {
        for (int i = 0; i < 16; ++i) weight[i] = 0.25f * sigma2 + xb[i] * xb[i];
        for (int i = 0; i < 16; ++i) waux[i] = std::sqrt(weight[i]);
      }
      SplitSigns(xb, 16, xval, signs);
      const float max = MaxOf(xval, 16);
      std::memset(L, 0, 16);
      if (max < kIQ2SGroupMaxEps) {
        scales[ib] = 0;
        continue;
      }
      float scale = IqSnapSearch(grid, kIQ2XSSearch, xval, weight, waux, max, max / (2 * kMaxQ - 1), L);
      if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 2; ++k) signs[k] = static_cast<uint8_t>(~signs[k]);
      }
      for (int k = 0; k < 2; ++k) {
        const int index = grid.IndexOf(grid.CodeOf(L + 8 * k));
        const int i8 = 2 * ib + k;
        out[2 + i8] = static_cast<uint8_t>(index & 255);
        out[66 + i8 / 4] |= static_cast<uint8_t>((index >> 8) << (2 * (i8 % 4)));
        out[2 + 32 + i8] = signs[k];
      }
      scales[ib] = scale;
      max_scale = std::max(max_scale, scale);
    }
    if (!max_scale) continue;
    const float d = max_scale / 31;
    StoreFp16(out, d * 0.9875f);
    const float id = 1 / d;
    for (int ib = 0; ib < 16; ++ib)
      out[74 + ib / 2] |= static_cast<uint8_t>(ScaleCode(scales[ib], id) << (4 * (ib % 2)));
  }
}

void DequantizeRowIQ2_XXS(const uint8_t* in, size_t n, float* y) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ2XXS);
  for (size_t b = 0; b < n / kQK; ++b, in += 66) {
    const float d = LoadFp16(in);
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t aux[2];
      std::memcpy(aux, in + 2 + 8 * ib, 8);
      const float db = d * (0.5f + (aux[1] >> 28)) * 0.25f;
      for (int l = 0; l < 4; ++l, y += 8) {
        const int8_t* g = grid.Decoded((aux[0] >> (8 * l)) & 255);
        const uint8_t signs = EvenParitySigns(static_cast<uint8_t>((aux[1] >> (7 * l)) & 127));
        for (int j = 0; j < 8; ++j) y[j] = db * g[j] * (signs & (1 << j) ? -1.f : 1.f);
      }
    }
  }
}

void DequantizeRowIQ2_XS(const uint8_t* in, size_t n, float* y) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ2XS);
  for (size_t b = 0; b < n / kQK; ++b, in += 74) {
    const float d = LoadFp16(in);
    for (int ib = 0; ib < 8; ++ib) {
      const float db[2] = {d * (0.5f + (in[66 + ib] & 0xF)) * 0.25f, d * (0.5f + (in[66 + ib] >> 4)) * 0.25f};
      for (int l = 0; l < 4; ++l, y += 8) {
        uint16_t q;
        std::memcpy(&q, in + 2 + 2 * (4 * ib + l), 2);
        const int8_t* g = grid.Decoded(q & 511);
        const uint8_t signs = EvenParitySigns(static_cast<uint8_t>(q >> 9));
        for (int j = 0; j < 8; ++j) y[j] = db[l / 2] * g[j] * (signs & (1 << j) ? -1.f : 1.f);
      }
    }
  }
}

void DequantizeRowIQ2_S(const uint8_t* in, size_t n, float* y) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ2S);
  for (size_t b = 0; b < n / kQK; ++b, in += 82) {
    const float d = LoadFp16(in);
    const uint8_t* qs = in + 2;
    const uint8_t* signs = in + 2 + 32;
    for (int ib = 0; ib < 8; ++ib, qs += 4, signs += 4) {
      const float db[2] = {d * (0.5f + (in[74 + ib] & 0xF)) * 0.25f, d * (0.5f + (in[74 + ib] >> 4)) * 0.25f};
      for (int l = 0; l < 4; ++l, y += 8) {
        const int8_t* g = grid.Decoded(qs[l] | ((in[66 + ib] << (8 - 2 * l)) & 0x300));
        for (int j = 0; j < 8; ++j) y[j] = db[l / 2] * g[j] * (signs[l] & (1 << j) ? -1.f : 1.f);
      }
    }
  }
}

}  // namespace modelsmith
