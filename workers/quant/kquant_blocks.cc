#include "workers/quant/kquant_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "workers/quant/half.h"
#include "workers/quant/qkx2_search.h"
#include "workers/quant/scale_search.h"

namespace modelsmith::kquant {

void GetScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void PackScaleMinK4(const uint8_t* ls, const uint8_t* lm, uint8_t* packed) {
  std::memset(packed, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      packed[j] = ls[j];
      packed[j + 4] = lm[j];
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      packed[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

void RequantizeK4(const float* x, const uint8_t* d, const uint8_t* dmin, const uint8_t* packed, int nmax, uint8_t* L) {
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    GetScaleMinK4(j, packed, &sc, &m);
    const float dj = LoadFp16(d) * sc;
    if (!dj) continue;
    const float dm = LoadFp16(dmin) * m;
    for (int ii = 0; ii < 32; ++ii) {
      L[32 * j + ii] = static_cast<uint8_t>(std::clamp(GgmlNearestInt((x[32 * j + ii] + dm) / dj), 0, nmax));
    }
  }
}

void Pack2Bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] =
          static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
  }
}

void FinishQ2_K(const float* x, uint8_t* L, uint8_t* block) {
  const uint8_t* sc = block + q2k::kScales;
  for (int j = 0; j < 16; ++j) {
    const float d = LoadFp16(block + q2k::kD) * (sc[j] & 0xF);
    if (!d) continue;
    const float dm = LoadFp16(block + q2k::kDmin) * (sc[j] >> 4);
    for (int ii = 0; ii < 16; ++ii) {
      L[16 * j + ii] = static_cast<uint8_t>(std::clamp(GgmlNearestInt((x[16 * j + ii] + dm) / d), 0, 3));
    }
  }
  Pack2Bit(L, block + q2k::kQs);
}

void FinishQ3_K(const float* x, const int* scale_levels, int8_t* L, uint8_t* block) {
  uint8_t* sc = block + q3k::kScales;
  std::memset(sc, 0, 12);
  for (int j = 0; j < 16; ++j) {
    int l = scale_levels[j];
    if (j < 8) {
      sc[j] = static_cast<uint8_t>(l & 0xF);
    } else {
      sc[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
    }
    l >>= 4;
    sc[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
  }
  for (int j = 0; j < 16; ++j) {
    int s = j < 8 ? sc[j] & 0xF : sc[j - 8] >> 4;
    s = (s | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
    const float d = LoadFp16(block + q3k::kD) * s;
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      L[16 * j + ii] = static_cast<int8_t>(std::clamp(GgmlNearestInt(x[16 * j + ii] / d), -4, 3) + 4);
    }
  }
  // High bit of the 3-bit level: the first 32 quants in bit 0 of hmask[0..31], the next 32 in bit 1, ...
  uint8_t* hmask = block + q3k::kHmask;
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
  Pack2Bit(levels, block + q3k::kQs);
}

void PackQ4_KLevels(const uint8_t* L, uint8_t* block) {
  uint8_t* q = block + q4k::kQs;
  for (int j = 0; j < kQK; j += 64, q += 32) {
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
  }
}

void PackQ5_KLevels(const uint8_t* L, uint8_t* block) {
  uint8_t* qh = block + q5k::kQh;
  uint8_t* ql = block + q5k::kQs;
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

void FinishQ6_K(const float* x, const float* scales, int8_t* L, uint8_t* block) {
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    if (std::fabs(scales[ib]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[ib]);
      max_scale = scales[ib];
    }
  }
  if (max_abs_scale < kGroupMaxEps) {  // an all-zero block
    std::memset(block, 0, q6k::kBytes);
    return;
  }
  const float iscale = -128.f / max_scale;
  StoreFp16(block + q6k::kD, 1 / iscale);
  auto* sc = reinterpret_cast<int8_t*>(block + q6k::kScales);
  for (int ib = 0; ib < 16; ++ib) sc[ib] = static_cast<int8_t>(std::min(127, GgmlNearestInt(iscale * scales[ib])));
  for (int j = 0; j < 16; ++j) {
    const float d = LoadFp16(block + q6k::kD) * sc[j];
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      L[16 * j + ii] = static_cast<int8_t>(std::clamp(GgmlNearestInt(x[16 * j + ii] / d), -32, 31) + 32);
    }
  }
  uint8_t* ql = block + q6k::kQl;
  uint8_t* qh = block + q6k::kQh;
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

}  // namespace modelsmith::kquant
