// Compiled with -mavx2 -mfma -mf16c -ffp-contract=off (see CMakeLists.txt): nothing here may be
// called on a CPU without them, and no multiply-add may be fused where the scalar code rounds
// twice.
#include "workers/quant/simd_avx2.h"

#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "workers/quant/half.h"
#include "workers/quant/qkx2_search.h"

namespace modelsmith {
namespace {

constexpr size_t kQK = 32;

inline __m256 Abs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// max over lanes of |v|, ignoring NaN lanes like std::max(acc, v) does.
inline __m256 MaxAbs(__m256 acc, __m256 v) { return _mm256_max_ps(Abs(v), acc); }

inline float HorizontalMax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// cvttps2dq, with the "integer indefinite" result of NaN/Inf turned into 0 (the low byte of
// 0x80000000, which is what the scalar float -> int8 casts keep).
inline __m256i TruncateLikeInt8Cast(__m256 v) {
  const __m256i i = _mm256_cvttps_epi32(v);
  const __m256i indefinite = _mm256_cmpeq_epi32(i, _mm256_set1_epi32(INT_MIN));
  return _mm256_andnot_si256(indefinite, i);
}

// Four vectors of int32 in [-128, 127] to 32 int8 in order.
inline __m256i PackToInt8(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i ab = _mm256_packs_epi32(a, b);
  const __m256i cd = _mm256_packs_epi32(c, d);
  const __m256i abcd = _mm256_packs_epi16(ab, cd);
  return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// roundf: half away from zero.
inline __m256 RoundHalfAway(__m256 v) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = Abs(_mm256_sub_ps(v, t));
  const __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
  const __m256 one = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
  return _mm256_add_ps(t, _mm256_and_ps(up, one));
}

}  // namespace

bool CpuHasAvx2Fma16c() {
  // F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c".
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
    return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

bool CpuHasAvx512() {
  static const bool has = CpuHasAvx2Fma16c() && __builtin_cpu_supports("avx512f");
  return has;
}

void DecodeF16Avx2(const uint8_t* in, size_t n, float* y) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2 * i));
    _mm256_storeu_ps(y + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i) y[i] = LoadFp16(in + 2 * i);
}

void QuantizeRowQ8_0Avx2(const float* x, size_t n, uint8_t* out) {
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 34) {
    const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    const __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    __m256 acc = _mm256_setzero_ps();
    acc = MaxAbs(acc, v0);
    acc = MaxAbs(acc, v1);
    acc = MaxAbs(acc, v2);
    acc = MaxAbs(acc, v3);
    const float amax = HorizontalMax(acc);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreFp16(out, d);
    const __m256 idv = _mm256_set1_ps(id);
    const __m256i q0 = TruncateLikeInt8Cast(RoundHalfAway(_mm256_mul_ps(v0, idv)));
    const __m256i q1 = TruncateLikeInt8Cast(RoundHalfAway(_mm256_mul_ps(v1, idv)));
    const __m256i q2 = TruncateLikeInt8Cast(RoundHalfAway(_mm256_mul_ps(v2, idv)));
    const __m256i q3 = TruncateLikeInt8Cast(RoundHalfAway(_mm256_mul_ps(v3, idv)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2), PackToInt8(q0, q1, q2, q3));
  }
}

void DequantizeRowQ8_0Avx2(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += 34, y += kQK) {
    const __m256 d = _mm256_set1_ps(LoadFp16(in));
    for (size_t j = 0; j < kQK; j += 8) {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + 2 + j));
      const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
      _mm256_storeu_ps(y + j, _mm256_mul_ps(q, d));
    }
  }
}

void QuantizeRowQ4_0Avx2(const float* x, size_t n, uint8_t* out) {
  alignas(32) int32_t codes[kQK];
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 18) {
    __m256 v[4];
    __m256 acc = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(x + 8 * k);
      acc = MaxAbs(acc, v[k]);
    }
    const float amax = HorizontalMax(acc);
    float max = 0.0f;  // a block without a nonzero value keeps +0, as the scalar search does
    if (amax > 0.0f) {
      for (size_t j = 0; j < kQK; ++j) {
        if (std::fabs(x[j]) == amax) {
          max = x[j];
          break;
        }
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreFp16(out, d);
    const __m256 idv = _mm256_set1_ps(id);
    const __m256 bias = _mm256_set1_ps(8.5f);
    const __m256i fifteen = _mm256_set1_epi32(15);
    for (int k = 0; k < 4; ++k) {
      // Two roundings, as the scalar reference: the product, then the sum (never fused).
      const __m256i q = TruncateLikeInt8Cast(_mm256_add_ps(_mm256_mul_ps(v[k], idv), bias));
      _mm256_store_si256(reinterpret_cast<__m256i*>(codes + 8 * k), _mm256_min_epi32(q, fifteen));
    }
    for (size_t j = 0; j < kQK / 2; ++j) out[2 + j] = static_cast<uint8_t>(codes[j] | (codes[j + kQK / 2] << 4));
  }
}

void DequantizeRowQ4_0Avx2(const uint8_t* in, size_t n, float* y) {
  const __m256i eight = _mm256_set1_epi32(8);
  for (size_t b = 0; b < n / kQK; ++b, in += 18, y += kQK) {
    const __m256 d = _mm256_set1_ps(LoadFp16(in));
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 2));
    const __m128i lo = _mm_and_si128(bytes, _mm_set1_epi8(0x0F));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0F));
    const __m128i halves[2] = {lo, hi};
    for (int h = 0; h < 2; ++h) {
      for (int k = 0; k < 2; ++k) {
        // The shift must be a literal for clang: the low 8 bytes, then the high 8.
        const __m128i part = k == 0 ? halves[h] : _mm_srli_si128(halves[h], 8);
        const __m256i q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(part), eight);
        _mm256_storeu_ps(y + 16 * h + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
      }
    }
  }
}

void QualityBlockAvx2(const float* s, const float* r, size_t n, float* signal, float* noise, float* max_error) {
  __m256 sig = _mm256_loadu_ps(signal);
  __m256 noi = _mm256_loadu_ps(noise);
  __m256 maxe = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 sv = _mm256_loadu_ps(s + i);
    const __m256 e = _mm256_sub_ps(sv, _mm256_loadu_ps(r + i));
    sig = _mm256_add_ps(sig, _mm256_mul_ps(sv, sv));
    noi = _mm256_add_ps(noi, _mm256_mul_ps(e, e));
    maxe = MaxAbs(maxe, e);
  }
  _mm256_storeu_ps(signal, sig);
  _mm256_storeu_ps(noise, noi);
  float m = std::max(*max_error, HorizontalMax(maxe));
  for (; i < n; ++i) {
    const float e = s[i] - r[i];
    signal[i % 8] += s[i] * s[i];
    noise[i % 8] += e * e;
    m = std::max(m, std::fabs(e));
  }
  *max_error = m;
}

bool AllFiniteAvx2(const float* x, size_t n) {
  size_t i = 0;
  __m256 ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_sub_ps(v, v), _mm256_setzero_ps(), _CMP_EQ_OQ));
  }
  if (_mm256_movemask_ps(ok) != 0xFF) return false;
  for (; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

float BnbInt8QuantizeRowAvx2(const float* x, size_t n, int8_t* q) {
  __m256 acc = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) acc = MaxAbs(acc, _mm256_loadu_ps(x + i));
  float scb = HorizontalMax(acc);
  for (; i < n; ++i) scb = std::max(scb, std::fabs(x[i]));
  const float factor = 127.0f / scb;
  const __m256 f = _mm256_set1_ps(factor);
  const __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  auto code = [&](const float* p) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(p), f);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    __m256 r = _mm256_andnot_ps(nan, _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
    return _mm256_cvtps_epi32(r);
  };
  i = 0;
  for (; i + 32 <= n; i += 32) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i),
                        PackToInt8(code(x + i), code(x + i + 8), code(x + i + 16), code(x + i + 24)));
  }
  for (; i < n; ++i) {
    const float v = x[i] * factor;
    q[i] = std::isnan(v) ? 0 : static_cast<int8_t>(std::fmin(std::fmax(std::nearbyint(v), -128.0f), 127.0f));
  }
  return scb;
}

void BnbInt8DequantizeRowAvx2(const int8_t* q, size_t n, float scb, float* y) {
  const __m256 s = _mm256_set1_ps(scb), inverse = _mm256_set1_ps(7.874015718698502e-3f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i))));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(v, s), inverse));
  }
  for (; i < n; ++i) y[i] = static_cast<float>(q[i]) * scb * 7.874015718698502e-3f;
}

void Bnb4QuantizeAvx2(const float* table, const float* x, size_t n, size_t block, uint8_t* packed, float* absmax) {
  alignas(32) int32_t codes[8];
  uint8_t high = 0;
  for (size_t start = 0, b = 0; start < n; start += block, ++b) {
    const size_t count = std::min(block, n - start);
    __m256 acc = _mm256_setzero_ps();
    size_t i = start;
    for (; i + 8 <= start + count; i += 8) acc = MaxAbs(acc, _mm256_loadu_ps(x + i));
    float m = HorizontalMax(acc);
    for (; i < start + count; ++i) m = std::max(m, std::fabs(x[i]));
    absmax[b] = m;
    const float inverse = 1.0f / m;
    const __m256 inv = _mm256_set1_ps(inverse), lo = _mm256_set1_ps(-1.0f), hi = _mm256_set1_ps(1.0f);
    for (i = start; i < start + count; i += 8) {
      const size_t lanes = std::min<size_t>(8, start + count - i);
      __m256 s;
      if (lanes == 8) {
        s = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv);
      } else {
        alignas(32) float tail[8] = {};
        for (size_t k = 0; k < lanes; ++k) tail[k] = x[i + k];
        s = _mm256_mul_ps(_mm256_load_ps(tail), inv);
      }
      // std::clamp keeps NaN: compare, then replace only the lanes outside.
      s = _mm256_blendv_ps(s, lo, _mm256_cmp_ps(s, lo, _CMP_LT_OQ));
      s = _mm256_blendv_ps(s, hi, _mm256_cmp_ps(hi, s, _CMP_LT_OQ));
      // torch.argmin: the first index of the least distance (NaN distances never win a compare).
      __m256 best = Abs(_mm256_sub_ps(s, _mm256_set1_ps(table[0])));
      __m256i index = _mm256_setzero_si256();
      for (int k = 1; k < 16; ++k) {
        const __m256 d = Abs(_mm256_sub_ps(s, _mm256_set1_ps(table[k])));
        const __m256 closer = _mm256_cmp_ps(d, best, _CMP_LT_OQ);
        best = _mm256_blendv_ps(best, d, closer);
        index = _mm256_blendv_epi8(index, _mm256_set1_epi32(k), _mm256_castps_si256(closer));
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(codes), index);
      for (size_t k = 0; k < lanes; ++k) {
        const size_t e = i + k;
        if (e % 2 == 0) {
          high = static_cast<uint8_t>(codes[k]);
        } else {
          packed[e / 2] = static_cast<uint8_t>(high << 4 | codes[k]);
        }
      }
    }
  }
  if (n % 2 == 1) packed[n / 2] = static_cast<uint8_t>(high << 4);
}

float MakeQkx2QuantsAvx2(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                         uint8_t* /*Laux*/, float rmin, float rdelta, int nstep, bool use_mad) {
  const Qkx2Start start = Qkx2FirstGuess(n, nmax, x, weights, L, use_mad);
  if (start.constant) {
    *the_min = -start.min;
    return 0.0f;
  }
  float min = start.min, scale = start.scale, best_error = start.best_error;
  const float max = start.max, sum_w = start.sum_w, sum_x = start.sum_x;

  // Candidates is = 0..nstep, eight at a time, one per lane. A candidate is measured from the
  // current min, which an accepted candidate changes: then the lanes after it were measured from
  // the old min, so the search starts again after the accepted one.
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256i mantissa = _mm256_set1_epi32(0x007FFFFF), offset = _mm256_set1_epi32(0x00400000);
  const __m256i zero = _mm256_setzero_si256(), top = _mm256_set1_epi32(nmax);
  alignas(32) int32_t codes[32][8];
  alignas(32) float lane_iscale[8], sum_l[8], sum_l2[8], sum_xl[8], lane_scale[8], lane_min[8], error[8];
  int first = nstep >= 1 ? 0 : nstep + 1;  // ggml: no candidates when nstep < 1
  while (first <= nstep) {
    const float from = min;
    for (int k = 0; k < 8; ++k) lane_iscale[k] = (rmin + rdelta * static_cast<float>(first + k) + nmax) / (max - from);
    const __m256 is = _mm256_load_ps(lane_iscale);
    __m256 sl = _mm256_setzero_ps(), sl2 = _mm256_setzero_ps(), sxl = _mm256_setzero_ps();
    for (int i = 0; i < n; ++i) {
      const __m256 v = _mm256_add_ps(_mm256_mul_ps(is, _mm256_set1_ps(x[i] - from)), magic);
      __m256i l = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(v), mantissa), offset);
      l = _mm256_min_epi32(_mm256_max_epi32(l, zero), top);
      _mm256_store_si256(reinterpret_cast<__m256i*>(codes[i]), l);
      const __m256 lf = _mm256_cvtepi32_ps(l);
      const __m256 wl = _mm256_mul_ps(_mm256_set1_ps(weights[i]), lf);
      sl = _mm256_add_ps(sl, wl);
      sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(wl, lf));
      sxl = _mm256_add_ps(sxl, _mm256_mul_ps(wl, _mm256_set1_ps(x[i])));
    }
    _mm256_store_ps(sum_l, sl);
    _mm256_store_ps(sum_l2, sl2);
    _mm256_store_ps(sum_xl, sxl);
    bool fitted[8];
    for (int k = 0; k < 8; ++k) {
      const float D = sum_w * sum_l2[k] - sum_l[k] * sum_l[k];
      fitted[k] = D > 0;
      lane_scale[k] = 0;
      lane_min[k] = 0;
      if (!fitted[k]) continue;
      lane_scale[k] = (sum_w * sum_xl[k] - sum_x * sum_l[k]) / D;
      lane_min[k] = (sum_l2[k] * sum_x - sum_l[k] * sum_xl[k]) / D;
      if (lane_min[k] > 0) {
        lane_min[k] = 0;
        lane_scale[k] = sum_xl[k] / sum_l2[k];
      }
    }
    const __m256 ts = _mm256_load_ps(lane_scale), tm = _mm256_load_ps(lane_min);
    __m256 err = _mm256_setzero_ps();
    for (int i = 0; i < n; ++i) {
      const __m256 lf = _mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(codes[i])));
      __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(ts, lf), tm), _mm256_set1_ps(x[i]));
      diff = use_mad ? _mm256_andnot_ps(sign, diff) : _mm256_mul_ps(diff, diff);
      err = _mm256_add_ps(err, _mm256_mul_ps(_mm256_set1_ps(weights[i]), diff));
    }
    _mm256_store_ps(error, err);
    int next = first + 8;
    for (int k = 0; k < 8 && first + k <= nstep; ++k) {
      if (!fitted[k] || !(error[k] < best_error)) continue;
      for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(codes[i][k]);
      best_error = error[k];
      scale = lane_scale[k];
      min = lane_min[k];
      if (min != from) {
        next = first + k + 1;
        break;
      }
    }
    first = next;
  }
  *the_min = -min;
  return scale;
}

namespace {

// Lanes of `bits` (8 x u16 in the low halves of 32-bit lanes, in order) stored to `out`.
void StorePacked16(__m256i bits, uint16_t* out) {
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(bits, bits), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(packed));
}

// Counts the NaN inputs, and the finite inputs whose 16-bit result `bits` is +-`out_inf`.
void CountSpecials(__m256i is_nan, __m256i is_inf, __m256i bits, __m256i out_inf, uint64_t* nan, uint64_t* overflowed) {
  const __m256i low15 = _mm256_set1_epi32(0x7FFF);
  const __m256i became_inf =
      _mm256_andnot_si256(_mm256_or_si256(is_nan, is_inf), _mm256_cmpeq_epi32(_mm256_and_si256(bits, low15), out_inf));
  *nan += __builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(is_nan)));
  *overflowed += __builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(became_inf)));
}

template <typename Scalar>
void CastTail(const float* x, size_t n, uint16_t* out, uint64_t* nan, uint64_t* overflowed, Scalar convert,
              uint16_t inf) {
  for (size_t i = 0; i < n; ++i) {
    out[i] = convert(x[i]);
    if (std::isnan(x[i]))
      ++*nan;
    else if ((out[i] & 0x7FFF) == inf && !std::isinf(x[i]))
      ++*overflowed;
  }
}

}  // namespace

void Fp32ToBf16RowAvx2(const float* x, size_t n, uint16_t* out, uint64_t* nan, uint64_t* overflowed) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i inf = _mm256_set1_epi32(0x7F800000);
  const __m256i bias = _mm256_set1_epi32(0x7FFF);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i quiet = _mm256_set1_epi32(0x40);
  const __m256i out_inf = _mm256_set1_epi32(0x7F80);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i a = _mm256_and_si256(u, abs_mask);
    const __m256i is_nan = _mm256_cmpgt_epi32(a, inf);
    const __m256i is_inf = _mm256_cmpeq_epi32(a, inf);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, lsb)), 16);
    const __m256i quieted = _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet);
    const __m256i bits = _mm256_blendv_epi8(rounded, quieted, is_nan);
    CountSpecials(is_nan, is_inf, bits, out_inf, nan, overflowed);
    StorePacked16(bits, out + i);
  }
  CastTail(x + i, n - i, out + i, nan, overflowed, Fp32ToBf16, 0x7F80);
}

void Fp32ToFp16RowAvx2(const float* x, size_t n, uint16_t* out, uint64_t* nan, uint64_t* overflowed) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i inf = _mm256_set1_epi32(0x7F800000);
  const __m256i out_inf = _mm256_set1_epi32(0x7C00);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256i a = _mm256_and_si256(_mm256_castps_si256(v), abs_mask);
    const __m256i is_nan = _mm256_cmpgt_epi32(a, inf);
    const __m256i is_inf = _mm256_cmpeq_epi32(a, inf);
    const __m128i half = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i bits = _mm256_cvtepu16_epi32(half);
    CountSpecials(is_nan, is_inf, bits, out_inf, nan, overflowed);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), half);
  }
  CastTail(x + i, n - i, out + i, nan, overflowed, Fp32ToFp16, 0x7C00);
}

void LowRankRowAvx2(const float* coef, const float* basis, size_t rank, size_t cols, float* row) {
  // 32 columns at a time stay in four registers through all `rank` steps, so the row is loaded
  // and stored once; each step rounds once (an FMA), in k order, like the scalar reference.
  size_t j = 0;
  for (; j + 32 <= cols; j += 32) {
    __m256 a0 = _mm256_loadu_ps(row + j), a1 = _mm256_loadu_ps(row + j + 8);
    __m256 a2 = _mm256_loadu_ps(row + j + 16), a3 = _mm256_loadu_ps(row + j + 24);
    for (size_t k = 0; k < rank; ++k) {
      const __m256 c = _mm256_broadcast_ss(coef + k);
      const float* b = basis + k * cols + j;
      a0 = _mm256_fmadd_ps(c, _mm256_loadu_ps(b), a0);
      a1 = _mm256_fmadd_ps(c, _mm256_loadu_ps(b + 8), a1);
      a2 = _mm256_fmadd_ps(c, _mm256_loadu_ps(b + 16), a2);
      a3 = _mm256_fmadd_ps(c, _mm256_loadu_ps(b + 24), a3);
    }
    _mm256_storeu_ps(row + j, a0);
    _mm256_storeu_ps(row + j + 8, a1);
    _mm256_storeu_ps(row + j + 16, a2);
    _mm256_storeu_ps(row + j + 24, a3);
  }
  for (; j + 8 <= cols; j += 8) {
    __m256 a = _mm256_loadu_ps(row + j);
    for (size_t k = 0; k < rank; ++k)
      a = _mm256_fmadd_ps(_mm256_broadcast_ss(coef + k), _mm256_loadu_ps(basis + k * cols + j), a);
    _mm256_storeu_ps(row + j, a);
  }
  for (; j < cols; ++j) {
    float a = row[j];
    for (size_t k = 0; k < rank; ++k) a = std::fma(coef[k], basis[k * cols + j], a);
    row[j] = a;
  }
}

}  // namespace modelsmith
