#include "workers/quant/ggml_kquants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "workers/quant/half.h"
#include "workers/quant/qkx2_search.h"

namespace modelsmith {
namespace {

constexpr int kQK = static_cast<int>(kSuperBlockElements);
constexpr float kGroupMaxEps = 1e-15f;

// Block layouts (ggml-common.h), as byte offsets.
namespace q2k {
constexpr int kScales = 0, kQs = 16, kD = 80, kDmin = 82, kBytes = 84;
}
namespace q3k {
constexpr int kHmask = 0, kQs = 32, kScales = 96, kD = 108, kBytes = 110;
}
namespace q4k {
constexpr int kD = 0, kDmin = 2, kScales = 4, kQs = 16, kBytes = 144;
}
namespace q5k {
constexpr int kD = 0, kDmin = 2, kScales = 4, kQh = 16, kQs = 48, kBytes = 176;
}
namespace q6k {
constexpr int kQl = 0, kQh = 128, kScales = 192, kD = 208, kBytes = 210;
}

// Round half to even, as ggml's nearest_int does by adding 1.5 * 2^23 (valid for |x| < 2^22).
// The value of largest magnitude, sign kept; the first one wins ties.
float SignedMax(int n, const float* x) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  return max;
}

// Symmetric scale search (make_qx_quants with rmse_type 1 and weights x^2): L in [0, 2*nmax).
float MakeQxQuants(int n, int nmax, const float* x, int8_t* L) {
  const float max = SignedMax(n, x);
  if (std::fabs(max) < kGroupMaxEps) {  // all (near) zero
    std::fill(L, L + n, 0);
    return 0.0f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = std::clamp(GgmlNearestInt(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(GgmlNearestInt(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        L[i] = static_cast<int8_t>(nmax + std::clamp(GgmlNearestInt(iscale * x[i]), -nmax, nmax - 1));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// make_q3_quants with do_rmse: iterative refinement of levels; L in [0, 2*nmax).
float MakeQ3Quants(int n, int nmax, const float* x, int8_t* L) {
  const float max = SignedMax(n, x);
  if (std::fabs(max) < kGroupMaxEps) {  // all (near) zero
    std::fill(L, L + n, 0);
    return 0.0f;
  }
  const float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(GgmlNearestInt(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * L[i] * L[i];
        const int new_l = std::clamp(GgmlNearestInt(x[i] * sl2 / slx), -nmax, nmax - 1);
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Asymmetric scale + min search (make_qkx2_quants): L in [0, nmax], *the_min = -min >= 0.
// Q4_K/Q5_K 6-bit scale and min of sub-block j from the 12-byte packing.
void GetScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Shared by Q4_K and Q5_K: 8 sub-blocks of 32, scales and mins packed to 6 bits. Fills
// out[d, dmin, scales] and L (levels in [0, nmax]).
void QuantizeK4Scales(const float* x, int nmax, float rmin, int nstep, uint8_t* d_out, uint8_t* dmin_out,
                      uint8_t* packed, uint8_t* L) {
  float mins[8], scales[8], weights[32];
  uint8_t Laux[32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = MakeQkx2Quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(packed, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = std::min<uint8_t>(63, static_cast<uint8_t>(GgmlNearestInt(inv_scale * scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, static_cast<uint8_t>(GgmlNearestInt(inv_min * mins[j])));
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  StoreFp16(d_out, max_scale / 63.f);
  StoreFp16(dmin_out, max_min / 63.f);
  // Re-quantize with the stored (FP16-rounded) scales.
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    GetScaleMinK4(j, packed, &sc, &m);
    const float d = LoadFp16(d_out) * sc;
    if (!d) continue;
    const float dm = LoadFp16(dmin_out) * m;
    for (int ii = 0; ii < 32; ++ii) {
      L[32 * j + ii] = static_cast<uint8_t>(std::clamp(GgmlNearestInt((x[32 * j + ii] + dm) / d), 0, nmax));
    }
  }
}

// 2-bit levels of 128 elements into 32 bytes: element l + 32k at bits 2k of byte l.
void Pack2Bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] =
          static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
  }
}

}  // namespace

void QuantizeRowQ2_K(const float* x, size_t n, uint8_t* out) {
  uint8_t L[kQK], Laux[16];
  float weights[16], mins[16], scales[16];
  constexpr float kQ4Scale = 15.f;
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += q2k::kBytes) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = MakeQkx2Quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
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
    for (int j = 0; j < 16; ++j) {
      const float d = LoadFp16(out + q2k::kD) * (sc[j] & 0xF);
      if (!d) continue;
      const float dm = LoadFp16(out + q2k::kDmin) * (sc[j] >> 4);
      for (int ii = 0; ii < 16; ++ii) {
        L[16 * j + ii] = static_cast<uint8_t>(std::clamp(GgmlNearestInt((x[16 * j + ii] + dm) / d), 0, 3));
      }
    }
    Pack2Bit(L, out + q2k::kQs);
  }
}

void QuantizeRowQ3_K(const float* x, size_t n, uint8_t* out) {
  int8_t L[kQK];
  float scales[16];
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
    uint8_t* sc = out + q3k::kScales;
    std::memset(sc, 0, 12);
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < 16; ++j) {
        int l = std::clamp(static_cast<int>(static_cast<int8_t>(GgmlNearestInt(iscale * scales[j]))), -32, 31) + 32;
        if (j < 8) {
          sc[j] = static_cast<uint8_t>(l & 0xF);
        } else {
          sc[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
        }
        l >>= 4;
        sc[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
      }
      StoreFp16(out + q3k::kD, 1 / iscale);
    } else {
      StoreFp16(out + q3k::kD, 0.f);
    }
    for (int j = 0; j < 16; ++j) {
      int s = j < 8 ? sc[j] & 0xF : sc[j - 8] >> 4;
      s = (s | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
      const float d = LoadFp16(out + q3k::kD) * s;
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        L[16 * j + ii] = static_cast<int8_t>(std::clamp(GgmlNearestInt(x[16 * j + ii] / d), -4, 3) + 4);
      }
    }
    // High bit of the 3-bit level: the first 32 quants in bit 0 of hmask[0..31], the next 32 in bit 1, ...
    uint8_t* hmask = out + q3k::kHmask;
    std::memset(hmask, 0, 32);
    for (int j = 0, m = 0, hm = 1; j < kQK; ++j) {
      if (L[j] > 3) {
        hmask[m] |= static_cast<uint8_t>(hm);
        L[j] -= 4;
      }
      if (++m == 32) {
        m = 0;
        hm <<= 1;
      }
    }
    uint8_t levels[kQK];
    for (int j = 0; j < kQK; ++j) levels[j] = static_cast<uint8_t>(L[j]);
    Pack2Bit(levels, out + q3k::kQs);
  }
}

void QuantizeRowQ4_K(const float* x, size_t n, uint8_t* out) {
  uint8_t L[kQK];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += q4k::kBytes) {
    QuantizeK4Scales(x, 15, -1.f, 20, out + q4k::kD, out + q4k::kDmin, out + q4k::kScales, L);
    uint8_t* q = out + q4k::kQs;
    for (int j = 0; j < kQK; j += 64, q += 32) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    }
  }
}

void QuantizeRowQ5_K(const float* x, size_t n, uint8_t* out) {
  uint8_t L[kQK];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += q5k::kBytes) {
    QuantizeK4Scales(x, 31, -0.5f, 15, out + q5k::kD, out + q5k::kDmin, out + q5k::kScales, L);
    uint8_t* qh = out + q5k::kQh;
    uint8_t* ql = out + q5k::kQs;
    std::memset(qh, 0, 32);
    uint8_t m1 = 1, m2 = 2;
    for (int n64 = 0; n64 < kQK; n64 += 64, ql += 32) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n64 + j];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= m1;
        }
        int l2 = L[n64 + j + 32];
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= m2;
        }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
      m1 = static_cast<uint8_t>(m1 << 2);
      m2 = static_cast<uint8_t>(m2 << 2);
    }
  }
}

void QuantizeRowQ6_K(const float* x, size_t n, uint8_t* out) {
  int8_t L[kQK];
  float scales[16];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += q6k::kBytes) {
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float scale = MakeQxQuants(16, 32, x + 16 * ib, L + 16 * ib);
      scales[ib] = scale;
      if (std::fabs(scale) > max_abs_scale) {
        max_abs_scale = std::fabs(scale);
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(out, 0, q6k::kBytes);
      continue;
    }
    const float iscale = -128.f / max_scale;
    StoreFp16(out + q6k::kD, 1 / iscale);
    auto* sc = reinterpret_cast<int8_t*>(out + q6k::kScales);
    for (int ib = 0; ib < 16; ++ib) sc[ib] = static_cast<int8_t>(std::min(127, GgmlNearestInt(iscale * scales[ib])));
    for (int j = 0; j < 16; ++j) {
      const float d = LoadFp16(out + q6k::kD) * sc[j];
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        L[16 * j + ii] = static_cast<int8_t>(std::clamp(GgmlNearestInt(x[16 * j + ii] / d), -32, 31) + 32);
      }
    }
    uint8_t* ql = out + q6k::kQl;
    uint8_t* qh = out + q6k::kQh;
    for (int j = 0; j < kQK; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
        ql[l] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                     ((L[j + l + 96] >> 4) << 6));
      }
    }
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
