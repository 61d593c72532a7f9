// AVX2 versions of ggml's scale searches (declared in simd_avx2.h). Compiled with -mavx2 -mfma
// -mf16c -ffp-contract=off like simd_avx2.cc: callers check CpuHasAvx2Fma16c() first, and every
// multiply and add rounds on its own, where the scalar reference rounds.
#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "workers/quant/ggml_iq4.h"
#include "workers/quant/qkx2_search.h"
#include "workers/quant/scale_search.h"
#include "workers/quant/simd_avx2.h"

namespace modelsmith {
namespace {

// GgmlNearestInt on eight lanes: the same add of 1.5 * 2^23 and the same bit arithmetic.
inline __m256i NearestInt(__m256 v) {
  const __m256 shifted = _mm256_add_ps(v, _mm256_set1_ps(12582912.0f));
  return _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x007FFFFF)),
                          _mm256_set1_epi32(0x00400000));
}

// make_qx_quants' 19 candidates in the order it tries them: the first guess (is = 0), then
// is = -9..-1 and 1..9. Candidate c's inverse scale is -(nmax + 0.1 * is) / max.
constexpr int kQxCandidates = 19;
constexpr int kQxLanes = 24;
int QxStep(int candidate) { return candidate == 0 ? 0 : candidate <= 9 ? candidate - 10 : candidate - 9; }

// The weighted squared distances of eight grid points (rows of `points`, kDims floats each) to
// xval at `scale`, one point per lane: the points are transposed so that lane k holds point k's
// coordinate i, and the terms w * (scale * p - x)^2 are added in coordinate order, as the scalar
// search adds them.
template <int kDims>
__m256 Distances8(const float* points, const int* index, const __m256* x, const __m256* w, __m256 scale);

template <>
__m256 Distances8<8>(const float* points, const int* index, const __m256* x, const __m256* w, __m256 scale) {
  __m256 r[8];
  for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(points + index[k] * 8);
  // 8x8 transpose: r[i] becomes coordinate i of the eight points.
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  const __m256 c[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                       _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                       _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                       _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
  __m256 d2 = _mm256_setzero_ps();
  for (int i = 0; i < 8; ++i) {
    const __m256 diff = _mm256_sub_ps(_mm256_mul_ps(scale, c[i]), x[i]);
    d2 = _mm256_add_ps(d2, _mm256_mul_ps(_mm256_mul_ps(w[i], diff), diff));
  }
  return d2;
}

template <>
__m256 Distances8<4>(const float* points, const int* index, const __m256* x, const __m256* w, __m256 scale) {
  __m256 r[4];
  for (int k = 0; k < 4; ++k)
    r[k] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(points + index[k] * 4)),
                                _mm_loadu_ps(points + index[k + 4] * 4), 1);
  // 4x4 transpose in each 128-bit half: c[i] holds coordinate i of points 0-3 | 4-7.
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 c[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                       _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
  __m256 d2 = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    const __m256 diff = _mm256_sub_ps(_mm256_mul_ps(scale, c[i]), x[i]);
    d2 = _mm256_add_ps(d2, _mm256_mul_ps(_mm256_mul_ps(w[i], diff), diff));
  }
  return d2;
}

template <int kDims>
int NearestNeighbour(const float* points, const uint16_t* neighbours, int count, const float* xval, const float* weight,
                     float scale) {
  __m256 x[kDims], w[kDims];
  for (int i = 0; i < kDims; ++i) {
    x[i] = _mm256_set1_ps(xval[i]);
    w[i] = _mm256_set1_ps(weight[i]);
  }
  const __m256 vscale = _mm256_set1_ps(scale), inf = _mm256_set1_ps(INFINITY);
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int first = 0; first < count; first += 8) {
    const int lanes = std::min(8, count - first);
    int index[8];
    for (int k = 0; k < 8; ++k) index[k] = neighbours[first + (k < lanes ? k : 0)];
    __m256 d2 = Distances8<kDims>(points, index, x, w, vscale);
    // Lanes past the list and NaN distances never win, as `d2 < best_d2` never holds for them.
    const __m256 live =
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    d2 = _mm256_blendv_ps(inf, d2, _mm256_and_ps(live, _mm256_cmp_ps(d2, d2, _CMP_ORD_Q)));
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(d2), _mm256_extractf128_ps(d2, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    const float block_min = _mm_cvtss_f32(m);
    if (block_min < best_d2) {  // the first lane holding it is the one a sequential scan keeps
      const int lane = __builtin_ctz(_mm256_movemask_ps(_mm256_cmp_ps(d2, _mm256_set1_ps(block_min), _CMP_EQ_OQ)));
      best_d2 = block_min;
      best = index[lane];
    }
  }
  return best;
}

}  // namespace

void Iq4CandidateFitsAvx2(const float* xb, const float* weight, const float* ids, float* sumqx, float* sumq2) {
  const float* level_of = Iq4LevelByTwiceFloor();
  const __m256 low = _mm256_set1_ps(-256.0f), high = _mm256_set1_ps(255.0f);
  const __m256i bias = _mm256_set1_epi32(256);
  for (int pass = 0; pass < kIq4Candidates; pass += 8) {
    const __m256 id = _mm256_loadu_ps(ids + pass);
    __m256 qx = _mm256_setzero_ps(), q2 = _mm256_setzero_ps();
    for (int j = 0; j < 32; ++j) {
      // NearestLevel: floor(2 * id * x), clamped to the table (whose ends are the end levels).
      const __m256 v = _mm256_mul_ps(id, _mm256_set1_ps(xb[j]));
      const __m256 t = _mm256_floor_ps(_mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, v), low), high));
      const __m256i index = _mm256_add_epi32(_mm256_cvttps_epi32(t), bias);
      const __m256 q = _mm256_i32gather_ps(level_of, index, 4);
      const __m256 wq = _mm256_mul_ps(_mm256_set1_ps(weight[j]), q);
      qx = _mm256_add_ps(qx, _mm256_mul_ps(wq, _mm256_set1_ps(xb[j])));
      q2 = _mm256_add_ps(q2, _mm256_mul_ps(wq, q));
    }
    _mm256_storeu_ps(sumqx + pass, qx);
    _mm256_storeu_ps(sumq2 + pass, q2);
  }
}

int IqNearestNeighbourAvx2(int dims, const float* points, const uint16_t* neighbours, int count, const float* xval,
                           const float* weight, float scale) {
  return dims == 4 ? NearestNeighbour<4>(points, neighbours, count, xval, weight, scale)
                   : NearestNeighbour<8>(points, neighbours, count, xval, weight, scale);
}

float MakeQxQuantsAvx2(int n, int nmax, const float* x, int8_t* L, const float* qw) {
  const float max = SignedMax(n, x);
  if (std::fabs(max) < kGroupMaxEps) {  // all (near) zero
    std::fill(L, L + n, 0);
    return 0.0f;
  }
  float weight_x[kMaxSearchGroup], weight[kMaxSearchGroup];
  for (int i = 0; i < n; ++i) {
    weight[i] = qw ? qw[i] : x[i] * x[i];
    weight_x[i] = weight[i] * x[i];
  }
  // Every candidate's sums are independent of the others (only the comparison is sequential),
  // so all are measured first, eight lanes per pass, each lane summing in element order.
  alignas(32) float iscale[kQxLanes], sumlx[kQxLanes], suml2[kQxLanes];
  for (int c = 0; c < kQxLanes; ++c) {
    const int is = c < kQxCandidates ? QxStep(c) : 0;
    iscale[c] = -(nmax + 0.1f * static_cast<float>(is)) / max;
  }
  const __m256i low = _mm256_set1_epi32(-nmax), high = _mm256_set1_epi32(nmax - 1);
  for (int pass = 0; pass < kQxLanes; pass += 8) {
    const __m256 is = _mm256_load_ps(iscale + pass);
    __m256 slx = _mm256_setzero_ps(), sl2 = _mm256_setzero_ps();
    for (int i = 0; i < n; ++i) {
      const __m256i l =
          _mm256_min_epi32(_mm256_max_epi32(NearestInt(_mm256_mul_ps(is, _mm256_set1_ps(x[i]))), low), high);
      const __m256 lf = _mm256_cvtepi32_ps(l);
      slx = _mm256_add_ps(slx, _mm256_mul_ps(_mm256_set1_ps(weight_x[i]), lf));
      sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(weight[i]), lf), lf));
    }
    _mm256_store_ps(sumlx + pass, slx);
    _mm256_store_ps(suml2 + pass, sl2);
  }
  float scale = suml2[0] ? sumlx[0] / suml2[0] : 0.0f;
  float best = scale * sumlx[0];
  int chosen = 0;
  for (int c = 1; c < kQxCandidates; ++c) {
    if (suml2[c] > 0 && sumlx[c] * sumlx[c] > best * suml2[c]) {
      scale = sumlx[c] / suml2[c];
      best = scale * sumlx[c];
      chosen = c;
    }
  }
  for (int i = 0; i < n; ++i)
    L[i] = static_cast<int8_t>(nmax + std::clamp(GgmlNearestInt(iscale[chosen] * x[i]), -nmax, nmax - 1));
  return scale;
}

}  // namespace modelsmith
