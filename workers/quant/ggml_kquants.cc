#include "workers/quant/ggml_kquants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "workers/quant/half.h"
#include "workers/quant/kquant_blocks.h"
#include "workers/quant/qkx2_search.h"
#include "workers/quant/scale_search.h"

namespace modelsmith {
namespace {

using namespace kquant;  // NOLINT: the block layouts and shared finishing steps

// Shared by Q4_K and Q5_K: 8 sub-blocks of 32, scales and mins from the reference search
// (weights av_x + |x|), packed to 6 bits against their largest. Fills d, dmin, the packed scales
// and L (levels in [0, nmax]).
void QuantizeK4Scales(const float* x, int nmax, float rmin, int nstep, uint8_t* d_out, uint8_t* dmin_out,
                      uint8_t* packed, uint8_t* L) {
  float mins[8], scales[8], weights[kQK];
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[32 * j + l] = av_x + std::fabs(x[32 * j + l]);
  }
  MakeQkx2QuantsGroups(8, 32, nmax, x, weights, L, scales, mins, rmin, 0.1f, nstep, false);
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(GgmlNearestInt(inv_scale * scales[j])));
    lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(GgmlNearestInt(inv_min * mins[j])));
  }
  PackScaleMinK4(ls, lm, packed);
  StoreFp16(d_out, max_scale / 63.f);
  StoreFp16(dmin_out, max_min / 63.f);
  RequantizeK4(x, d_out, dmin_out, packed, nmax, L);
}

}  // namespace

void QuantizeRowQ2_K(const float* x, size_t n, uint8_t* out) {
  uint8_t L[kQK];
  float weights[kQK], mins[16], scales[16];
  constexpr float kQ4Scale = 15.f;
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += q2k::kBytes) {
    for (int l = 0; l < kQK; ++l) weights[l] = std::fabs(x[l]);
    MakeQkx2QuantsGroups(16, 16, 3, x, weights, L, scales, mins, -0.5f, 0.1f, 15, true);
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    uint8_t* sc = out + q2k::kScales;
    if (max_scale > 0) {
      const float iscale = kQ4Scale / max_scale;
      for (int j = 0; j < 16; ++j) sc[j] = static_cast<uint8_t>(GgmlNearestInt(iscale * scales[j]));
      StoreFp16(out + q2k::kD, max_scale / kQ4Scale);
    } else {
      std::memset(sc, 0, 16);
      StoreFp16(out + q2k::kD, 0.f);
    }
    if (max_min > 0) {
      const float iscale = kQ4Scale / max_min;
      for (int j = 0; j < 16; ++j) sc[j] |= static_cast<uint8_t>(GgmlNearestInt(iscale * mins[j]) << 4);
      StoreFp16(out + q2k::kDmin, max_min / kQ4Scale);
    } else {
      StoreFp16(out + q2k::kDmin, 0.f);
    }
    FinishQ2_K(x, L, out);
  }
}

void QuantizeRowQ3_K(const float* x, size_t n, uint8_t* out) {
  int8_t L[kQK];
  float scales[16];
  int scale_levels[16];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += q3k::kBytes) {
    float max_scale = 0, amax = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = MakeQ3Quants(16, 4, x + 16 * j, L + 16 * j);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        scale_levels[j] =
            std::clamp(static_cast<int>(static_cast<int8_t>(GgmlNearestInt(iscale * scales[j]))), -32, 31) + 32;
      }
      StoreFp16(out + q3k::kD, 1 / iscale);
    } else {
      std::fill(scale_levels, scale_levels + 16, 0);
      StoreFp16(out + q3k::kD, 0.f);
    }
    FinishQ3_K(x, scale_levels, L, out);
  }
}

void QuantizeRowQ4_K(const float* x, size_t n, uint8_t* out) {
  uint8_t L[kQK];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += q4k::kBytes) {
    QuantizeK4Scales(x, 15, -1.f, 20, out + q4k::kD, out + q4k::kDmin, out + q4k::kScales, L);
    PackQ4_KLevels(L, out);
  }
}

void QuantizeRowQ5_K(const float* x, size_t n, uint8_t* out) {
  uint8_t L[kQK];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += q5k::kBytes) {
    QuantizeK4Scales(x, 31, -0.5f, 15, out + q5k::kD, out + q5k::kDmin, out + q5k::kScales, L);
    PackQ5_KLevels(L, out);
  }
}

void QuantizeRowQ6_K(const float* x, size_t n, uint8_t* out) {
  int8_t L[kQK];
  float scales[16];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += q6k::kBytes) {
    MakeQxQuantsGroups(16, 16, 32, x, L, nullptr, scales);
    FinishQ6_K(x, scales, L, out);
  }
}

void DequantizeRowQ2_K(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += q2k::kBytes) {
    const float d = LoadFp16(in + q2k::kD), min = LoadFp16(in + q2k::kDmin);
    const uint8_t* q = in + q2k::kQs;
    int is = 0;
    for (int n128 = 0; n128 < kQK; n128 += 128, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 2; ++half) {
          const uint8_t sc = in[q2k::kScales + is++];
          const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * ((q[l + 16 * half] >> shift) & 3) - ml;
        }
      }
    }
  }
}

void DequantizeRowQ3_K(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += q3k::kBytes) {
    const float d_all = LoadFp16(in + q3k::kD);
    const uint8_t* sc = in + q3k::kScales;
    int8_t scales[16];
    for (int j = 0; j < 16; ++j) {
      const int low = j < 8 ? sc[j] & 0xF : sc[j - 8] >> 4;
      scales[j] = static_cast<int8_t>((low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
    }
    const uint8_t* q = in + q3k::kQs;
    const uint8_t* hm = in + q3k::kHmask;
    uint8_t m = 1;
    int is = 0;
    for (int n128 = 0; n128 < kQK; n128 += 128, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
        for (int half = 0; half < 2; ++half) {
          const float dl = d_all * scales[is++];
          for (int l = 0; l < 16; ++l) {
            const int idx = l + 16 * half;
            *y++ = dl * (((q[idx] >> shift) & 3) - ((hm[idx] & m) ? 0 : 4));
          }
        }
      }
    }
  }
}

void DequantizeRowQ4_K(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += q4k::kBytes) {
    const float d = LoadFp16(in + q4k::kD), min = LoadFp16(in + q4k::kDmin);
    const uint8_t* q = in + q4k::kQs;
    for (int is = 0; is < 8; is += 2, q += 32) {
      uint8_t sc, m;
      GetScaleMinK4(is, in + q4k::kScales, &sc, &m);
      const float d1 = d * sc, m1 = min * m;
      GetScaleMinK4(is + 1, in + q4k::kScales, &sc, &m);
      const float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

void DequantizeRowQ5_K(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += q5k::kBytes) {
    const float d = LoadFp16(in + q5k::kD), min = LoadFp16(in + q5k::kDmin);
    const uint8_t* ql = in + q5k::kQs;
    const uint8_t* qh = in + q5k::kQh;
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < 8; is += 2, ql += 32) {
      uint8_t sc, m;
      GetScaleMinK4(is, in + q5k::kScales, &sc, &m);
      const float d1 = d * sc, m1 = min * m;
      GetScaleMinK4(is + 1, in + q5k::kScales, &sc, &m);
      const float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

void DequantizeRowQ6_K(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += q6k::kBytes) {
    const float d = LoadFp16(in + q6k::kD);
    const uint8_t* ql = in + q6k::kQl;
    const uint8_t* qh = in + q6k::kQh;
    const auto* sc = reinterpret_cast<const int8_t*>(in + q6k::kScales);
    for (int n128 = 0; n128 < kQK; n128 += 128, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

}  // namespace modelsmith
