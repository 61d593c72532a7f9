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

namespace modelsmith {
namespace {

inline __m256 Select(__m256 mask, __m256 if_false, __m256 if_true) { return _mm256_blendv_ps(if_false, if_true, mask); }

// |d| or d * d, as the search measures a difference.
inline __m256 Measure(__m256 d, bool use_mad) {
  return use_mad ? _mm256_andnot_ps(_mm256_set1_ps(-0.0f), d) : _mm256_mul_ps(d, d);
}

// Levels of lane values x at inverse scale iscale from min: clamp(nearest_int(iscale * (x - min)), 0, nmax),
// as floats (exact small integers).
inline __m256 LevelsFrom(__m256 x, __m256 min, __m256 iscale, __m256i nmax) {
  const __m256i l = NearestInt(_mm256_mul_ps(iscale, _mm256_sub_ps(x, min)));
  return _mm256_cvtepi32_ps(_mm256_min_epi32(_mm256_max_epi32(l, _mm256_setzero_si256()), nmax));
}

}  // namespace

void MakeQkx2Quants8GroupsAvx2(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* scales,
                               float* the_mins, float rmin, float rdelta, int nstep, bool use_mad) {
  // Element i of the eight groups, one group per lane.
  __m256 xs[32], ws[32], best_l[32], aux_l[32];
  const __m256i rows = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(n));
  for (int i = 0; i < n; ++i) {
    xs[i] = _mm256_i32gather_ps(x + i, rows, 4);
    ws[i] = _mm256_i32gather_ps(weights + i, rows, 4);
  }
  // Qkx2FirstGuess, per lane.
  __m256 min = xs[0], max = xs[0], sum_w = ws[0], sum_x = _mm256_mul_ps(ws[0], xs[0]);
  for (int i = 1; i < n; ++i) {
    min = Select(_mm256_cmp_ps(xs[i], min, _CMP_LT_OQ), min, xs[i]);
    max = Select(_mm256_cmp_ps(xs[i], max, _CMP_GT_OQ), max, xs[i]);
    sum_w = _mm256_add_ps(sum_w, ws[i]);
    sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(ws[i], xs[i]));
  }
  const __m256 zero = _mm256_setzero_ps();
  min = Select(_mm256_cmp_ps(min, zero, _CMP_GT_OQ), min, zero);
  const __m256 constant = _mm256_cmp_ps(max, min, _CMP_EQ_OQ);
  const __m256i top = _mm256_set1_epi32(nmax);
  const __m256 fnmax = _mm256_set1_ps(static_cast<float>(nmax));
  const __m256 range = _mm256_sub_ps(max, min);
  __m256 iscale = _mm256_div_ps(fnmax, range);
  __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale);
  __m256 best_error = zero;
  for (int i = 0; i < n; ++i) {
    best_l[i] = LevelsFrom(xs[i], min, iscale, top);
    const __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale, best_l[i]), min), xs[i]);
    best_error = _mm256_add_ps(best_error, _mm256_mul_ps(ws[i], Measure(diff, use_mad)));
  }
  // The candidates, every lane in order from its own current min (which an accepted candidate
  // moves; max stays). A constant group accepts none.
  for (int is = 0; nstep >= 1 && is <= nstep; ++is) {
    iscale = _mm256_div_ps(_mm256_set1_ps(rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)),
                           _mm256_sub_ps(max, min));
    __m256 sum_l = zero, sum_l2 = zero, sum_xl = zero;
    for (int i = 0; i < n; ++i) {
      aux_l[i] = LevelsFrom(xs[i], min, iscale, top);
      const __m256 wl = _mm256_mul_ps(ws[i], aux_l[i]);
      sum_l = _mm256_add_ps(sum_l, wl);
      sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, aux_l[i]));
      sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, xs[i]));
    }
    const __m256 D = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
    const __m256 fitted = _mm256_cmp_ps(D, zero, _CMP_GT_OQ);
    __m256 this_scale = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), D);
    __m256 this_min = _mm256_div_ps(_mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), D);
    const __m256 positive_min = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
    this_min = Select(positive_min, this_min, zero);
    this_scale = Select(positive_min, this_scale, _mm256_div_ps(sum_xl, sum_l2));
    __m256 error = zero;
    for (int i = 0; i < n; ++i) {
      const __m256 diff = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(this_scale, aux_l[i]), this_min), xs[i]);
      error = _mm256_add_ps(error, _mm256_mul_ps(ws[i], Measure(diff, use_mad)));
    }
    const __m256 better =
        _mm256_andnot_ps(constant, _mm256_and_ps(fitted, _mm256_cmp_ps(error, best_error, _CMP_LT_OQ)));
    if (_mm256_movemask_ps(better) == 0) continue;
    for (int i = 0; i < n; ++i) best_l[i] = Select(better, best_l[i], aux_l[i]);
    best_error = Select(better, best_error, error);
    scale = Select(better, scale, this_scale);
    min = Select(better, min, this_min);
  }
  // A constant group: all levels 0, scale 0, its min as found.
  alignas(32) float lane_scale[8], lane_min[8], lane_levels[32][8];
  _mm256_store_ps(lane_scale, Select(constant, scale, zero));
  _mm256_store_ps(lane_min, min);
  for (int i = 0; i < n; ++i) _mm256_store_ps(lane_levels[i], Select(constant, best_l[i], zero));
  for (int k = 0; k < 8; ++k) {
    scales[k] = lane_scale[k];
    the_mins[k] = -lane_min[k];
    for (int i = 0; i < n; ++i) L[k * n + i] = static_cast<uint8_t>(lane_levels[i][k]);
  }
}

void MakeQx8GroupsAvx2(int n, int nmax, const float* x, int8_t* L, const float* qw, float* scales) {
  __m256 xs[32], ws[32];
  const __m256i rows = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(n));
  const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
  // SignedMax per lane: the first value of largest magnitude.
  __m256 max = zero, amax = zero;
  for (int i = 0; i < n; ++i) {
    xs[i] = _mm256_i32gather_ps(x + i, rows, 4);
    ws[i] = qw ? _mm256_i32gather_ps(qw + i, rows, 4) : _mm256_mul_ps(xs[i], xs[i]);
    const __m256 ax = _mm256_andnot_ps(sign, xs[i]);
    const __m256 larger = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
    amax = Select(larger, amax, ax);
    max = Select(larger, max, xs[i]);
  }
  const __m256 all_zero = _mm256_cmp_ps(_mm256_andnot_ps(sign, max), _mm256_set1_ps(kGroupMaxEps), _CMP_LT_OQ);
  const __m256i low = _mm256_set1_epi32(-nmax), high = _mm256_set1_epi32(nmax - 1);
  auto fit = [&](__m256 iscale, __m256* sumlx, __m256* suml2) {
    __m256 lx = zero, l2 = zero;
    for (int i = 0; i < n; ++i) {
      const __m256i l = _mm256_min_epi32(_mm256_max_epi32(NearestInt(_mm256_mul_ps(iscale, xs[i])), low), high);
      const __m256 lf = _mm256_cvtepi32_ps(l);
      lx = _mm256_add_ps(lx, _mm256_mul_ps(_mm256_mul_ps(ws[i], xs[i]), lf));
      l2 = _mm256_add_ps(l2, _mm256_mul_ps(_mm256_mul_ps(ws[i], lf), lf));
    }
    *sumlx = lx;
    *suml2 = l2;
  };
  const __m256 fnmax = _mm256_set1_ps(static_cast<float>(nmax));
  __m256 chosen = _mm256_div_ps(_mm256_set1_ps(static_cast<float>(-nmax)), max);
  __m256 sumlx, suml2;
  fit(chosen, &sumlx, &suml2);
  __m256 scale = Select(_mm256_cmp_ps(suml2, zero, _CMP_NEQ_UQ), zero, _mm256_div_ps(sumlx, suml2));
  __m256 best = _mm256_mul_ps(scale, sumlx);
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const __m256 iscale =
        _mm256_div_ps(_mm256_xor_ps(sign, _mm256_add_ps(fnmax, _mm256_set1_ps(0.1f * static_cast<float>(is)))), max);
    fit(iscale, &sumlx, &suml2);
    const __m256 better =
        _mm256_and_ps(_mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
                      _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2), _CMP_GT_OQ));
    if (_mm256_movemask_ps(better) == 0) continue;
    const __m256 this_scale = _mm256_div_ps(sumlx, suml2);
    scale = Select(better, scale, this_scale);
    best = Select(better, best, _mm256_mul_ps(this_scale, sumlx));
    chosen = Select(better, chosen, iscale);
  }
  alignas(32) float lane_scale[8];
  alignas(32) int32_t levels[32][8];
  _mm256_store_ps(lane_scale, Select(all_zero, scale, zero));
  const __m256i offset = _mm256_set1_epi32(nmax);
  for (int i = 0; i < n; ++i) {
    const __m256i l = _mm256_min_epi32(_mm256_max_epi32(NearestInt(_mm256_mul_ps(chosen, xs[i])), low), high);
    const __m256i level = _mm256_andnot_si256(_mm256_castps_si256(all_zero), _mm256_add_epi32(l, offset));
    _mm256_store_si256(reinterpret_cast<__m256i*>(levels[i]), level);
  }
  for (int k = 0; k < 8; ++k) {
    scales[k] = lane_scale[k];
    for (int i = 0; i < n; ++i) L[k * n + i] = static_cast<int8_t>(levels[i][k]);
  }
}

}  // namespace modelsmith
