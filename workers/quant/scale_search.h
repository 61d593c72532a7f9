// ggml's per-group scale searches (ggml-quants.c make_qx_quants, make_q3_quants, make_qkx3_quants,
// make_qp_quants), shared by the reference quantizers and their importance-matrix versions. Each
// rounds with GgmlNearestInt and sums in element order, so every result is ggml's to the bit.
// Pure functions; `n` is at most kMaxSearchGroup.
#ifndef MODELSMITH_WORKERS_QUANT_SCALE_SEARCH_H_
#define MODELSMITH_WORKERS_QUANT_SCALE_SEARCH_H_

#include <cstdint>

namespace modelsmith {

// ggml's GROUP_MAX_EPS: a group whose largest magnitude is below it is all zero.
inline constexpr float kGroupMaxEps = 1e-15f;

// The largest group a search takes (ggml's legacy blocks and K-quant sub-blocks are 16 or 32).
inline constexpr int kMaxSearchGroup = 32;

// The value of largest magnitude, sign kept; the first one wins ties.
float SignedMax(int n, const float* x);

// Symmetric scale search (make_qx_quants, rmse_type 1): tries nmax + 0.1*is for is in -9..9 and
// keeps the best weighted fit. Weights are `qw` or, when null, x^2. L gets levels in [0, 2*nmax).
// The AVX2 version (simd_avx2.h) measures eight candidate scales at once, one per lane, each
// summed in element order with the scalar roundings; MakeQxQuants picks it when the CPU has AVX2.
float MakeQxQuants(int n, int nmax, const float* x, int8_t* L, const float* qw);
float MakeQxQuantsScalar(int n, int nmax, const float* x, int8_t* L, const float* qw);
// The same search for `groups` groups of `n` values one after another (qw likewise, or null),
// scales[g] out. With AVX2, eight groups at once, one per lane (MakeQx8GroupsAvx2 in
// simd_avx2.h). REQUIRES: groups % 8 == 0, n <= 32.
void MakeQxQuantsGroups(int groups, int n, int nmax, const float* x, int8_t* L, const float* qw, float* scales);

// make_q3_quants with do_rmse: iterative refinement of levels with weights x^2; L in [0, 2*nmax).
float MakeQ3Quants(int n, int nmax, const float* x, int8_t* L);

// Asymmetric scale + min search with explicit weights (make_qkx3_quants; null weights mean x^2):
// L in [0, nmax], *the_min = -min >= 0. Laux is scratch of n bytes.
float MakeQkx3Quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min, uint8_t* Laux,
                     float rmin, float rdelta, int nstep, bool use_mad);

// Positive-only scale search for the sub-block scales themselves (make_qp_quants): L in [0, nmax].
float MakeQpQuants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_SCALE_SEARCH_H_
