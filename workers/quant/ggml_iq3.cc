#include "workers/quant/ggml_iq3.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "workers/quant/half.h"
#include "workers/quant/iq_grid.h"
#include "workers/quant/iq_search.h"
#include "workers/quant/qkx2_search.h"

namespace modelsmith {
namespace {

constexpr int kQK = 256;
constexpr int kMaxQ = 8;
constexpr float kIQ3XXSGroupMaxEps = 1e-8f;
constexpr IqSearch kIQ3XXSSearch{32, kMaxQ, 0.2f, 15, IqSearch::Resnap::kOffGridVectors, true};
constexpr IqSearch kIQ3SSearch{32, kMaxQ, 0.2f, 9, IqSearch::Resnap::kAllWhenAnyOffGrid, false};

// Weights of one block (qw * sqrt(sigma2 + x^2), or x^2), their square roots, and the
// magnitudes with the sign bits of each 8 (bit i set for a negative value).
void PrepareBlock(const float* xb, const float* qw, float sigma2, float* weight, float* waux, float* xval,
                  uint8_t* signs) {
  for (int i = 0; i < 32; ++i) weight[i] = qw ? qw[i] * std::sqrt(sigma2 + xb[i] * xb[i]) : xb[i] * xb[i];
  for (int i = 0; i < 32; ++i) waux[i] = std::sqrt(weight[i]);
  for (int k = 0; k < 4; ++k) {
    uint8_t s = 0;
    for (int i = 0; i < 8; ++i) {
      const float v = xb[8 * k + i];
      xval[8 * k + i] = v >= 0 ? v : -v;
      if (v < 0) s |= static_cast<uint8_t>(1 << i);
    }
    signs[k] = s;
  }
}

float SuperBlockSigma2(const float* x) {
  float sumx2 = 0;
  for (int i = 0; i < kQK; ++i) sumx2 += x[i] * x[i];
  return 2 * sumx2 / kQK;
}

}  // namespace

void QuantizeRowIQ3_XXS(const float* x, size_t n, const float* qw, uint8_t* out) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ3XXS);
  float weight[32], waux[32], xval[32], scales[8];
  int8_t L[32];
  uint8_t signs[4];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 98) {
    // Layout: d (FP16), 64 grid indices, 8 x uint32 (4 x 7 sign bits, 4-bit scale on top).
    uint8_t q3[96] = {};
    uint32_t scales_and_signs[8] = {};
    StoreFp16(out, 0.f);
    const float sigma2 = SuperBlockSigma2(x);
    float max_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = x + 32 * ib;
      PrepareBlock(xb, qw ? qw + kQK * b + 32 * ib : nullptr, sigma2, weight, waux, xval, signs);
      // Seven sign bits per 8: an odd count of negatives flips the least important value.
      for (int k = 0; k < 4; ++k) {
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
      float max = xval[0];
      for (int i = 1; i < 32; ++i) max = std::max(max, xval[i]);
      if (max < kIQ3XXSGroupMaxEps) {
        scales[ib] = 0;
        continue;
      }
      std::memset(L, 0, 32);
      float scale = IqSnapSearch(grid, kIQ3XXSSearch, xval, weight, waux, max, max / (2 * kMaxQ - 1), L);
      if (scale < 0) {  // never expected; the sign bits absorb it as ggml does
        scale = -scale;
        for (int k = 0; k < 4; ++k) signs[k] = static_cast<uint8_t>(~signs[k] & 127);
      }
      for (int k = 0; k < 8; ++k) q3[8 * ib + k] = static_cast<uint8_t>(grid.IndexOf(grid.CodeOf(L + 4 * k)));
      scales_and_signs[ib] = signs[0] | (signs[1] << 7) | (signs[2] << 14) | (static_cast<uint32_t>(signs[3]) << 21);
      scales[ib] = scale;
      max_scale = std::max(max_scale, scale);
    }
    if (!max_scale) {
      std::memset(out + 2, 0, 96);
      continue;
    }
    const float d = max_scale / 31;
    StoreFp16(out, d * 1.0125f);
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ++ib) {
      const int l = std::clamp(GgmlNearestInt(0.5f * (id * scales[ib] - 1)), 0, 15);
      scales_and_signs[ib] |= static_cast<uint32_t>(l) << 28;
    }
    std::memcpy(q3 + 64, scales_and_signs, 32);
    std::memcpy(out + 2, q3, 96);
  }
}

void QuantizeRowIQ3_S(const float* x, size_t n, const float* qw, uint8_t* out) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ3S);
  float weight[32], waux[32], xval[32], scales[8];
  int8_t L[32];
  uint8_t signs[4];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 110) {
    // Layout: d (FP16), qs[64] (low 8 index bits), qh[8] (9th bits), signs[32], scales[4].
    std::memset(out, 0, 110);
    uint8_t* qs = out + 2;
    uint8_t* qh = out + 66;
    uint8_t* sign_bytes = out + 74;
    const float sigma2 = SuperBlockSigma2(x);
    float max_scale = 0;
    // ggml advances qs and signs only past blocks it writes: an all-zero block leaves them where
    // they are, and the next block's bytes land in its place. The format is what ggml writes.
    for (int ib = 0; ib < 8; ++ib) {
      PrepareBlock(x + 32 * ib, qw ? qw + kQK * b + 32 * ib : nullptr, sigma2, weight, waux, xval, signs);
      float max = xval[0];
      for (int i = 1; i < 32; ++i) max = std::max(max, xval[i]);
      if (!max) {
        scales[ib] = 0;
        continue;
      }
      std::memset(L, 0, 32);
      float scale = IqSnapSearch(grid, kIQ3SSearch, xval, weight, waux, max, max / (2 * kMaxQ - 1), L);
      if (scale < 0) {
        scale = -scale;
        for (int k = 0; k < 4; ++k) signs[k] = static_cast<uint8_t>(~signs[k]);
      }
      for (int k = 0; k < 8; ++k) {
        const int index = grid.IndexOf(grid.CodeOf(L + 4 * k));
        qs[k] = static_cast<uint8_t>(index & 255);
        qh[(ib * 8 + k) / 8] |= static_cast<uint8_t>((index >> 8) << ((ib * 8 + k) % 8));
      }
      std::memcpy(sign_bytes, signs, 4);
      qs += 8;
      sign_bytes += 4;
      scales[ib] = scale;
      max_scale = std::max(max_scale, scale);
    }
    if (!max_scale) continue;
    const float d = max_scale / 31;
    StoreFp16(out, d * 1.033f);
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ib += 2) {
      const int l1 = std::clamp(GgmlNearestInt(0.5f * (id * scales[ib] - 1)), 0, 15);
      const int l2 = std::clamp(GgmlNearestInt(0.5f * (id * scales[ib + 1] - 1)), 0, 15);
      out[106 + ib / 2] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
  }
}

void DequantizeRowIQ3_XXS(const uint8_t* in, size_t n, float* y) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ3XXS);
  for (size_t b = 0; b < n / kQK; ++b, in += 98) {
    const float d = LoadFp16(in);
    const uint8_t* qs = in + 2;
    for (int ib = 0; ib < 8; ++ib, qs += 8) {
      uint32_t aux;
      std::memcpy(&aux, in + 2 + 64 + 4 * ib, 4);
      const float db = d * (0.5f + (aux >> 28)) * 0.5f;
      for (int l = 0; l < 4; ++l, y += 8) {
        const uint8_t signs = EvenParitySigns(static_cast<uint8_t>((aux >> (7 * l)) & 127));
        const int8_t* g1 = grid.Decoded(qs[2 * l]);
        const int8_t* g2 = grid.Decoded(qs[2 * l + 1]);
        for (int j = 0; j < 4; ++j) {
          y[j] = db * static_cast<uint8_t>(g1[j]) * (signs & (1 << j) ? -1.f : 1.f);
          y[j + 4] = db * static_cast<uint8_t>(g2[j]) * (signs & (1 << (j + 4)) ? -1.f : 1.f);
        }
      }
    }
  }
}

void DequantizeRowIQ3_S(const uint8_t* in, size_t n, float* y) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ3S);
  for (size_t b = 0; b < n / kQK; ++b, in += 110) {
    const float d = LoadFp16(in);
    const uint8_t* qs = in + 2;
    const uint8_t* qh = in + 66;
    const uint8_t* signs = in + 74;
    for (int ib = 0; ib < 8; ++ib, qs += 8, signs += 4) {
      const uint8_t scale = in[106 + ib / 2];
      const float db = d * (1 + 2 * (ib % 2 ? scale >> 4 : scale & 0xF));
      for (int l = 0; l < 4; ++l, y += 8) {
        const int i1 = qs[2 * l] | (((qh[ib] >> (2 * l)) & 1) << 8);
        const int i2 = qs[2 * l + 1] | (((qh[ib] >> (2 * l + 1)) & 1) << 8);
        const int8_t* g1 = grid.Decoded(i1);
        const int8_t* g2 = grid.Decoded(i2);
        for (int j = 0; j < 4; ++j) {
          y[j] = db * g1[j] * (signs[l] & (1 << j) ? -1.f : 1.f);
          y[j + 4] = db * g2[j] * (signs[l] & (1 << (j + 4)) ? -1.f : 1.f);
        }
      }
    }
  }
}

}  // namespace modelsmith
