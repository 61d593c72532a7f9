// ggml's non-linear 4-bit types IQ4_NL (32-element blocks: an FP16 scale and 16 bytes of 4-bit
// indices into a fixed 16-value table) and IQ4_XS (256-element super-blocks: an FP16 scale,
// eight 6-bit sub-block scales, the same indices), bit for bit with ggml's `quantize_iq4_nl` /
// `quantize_iq4_xs` (ggml-quants.c quantize_row_iq4_nl_impl, 7 refinement tries each way).
// `qw`: the row's importance values (n of them) or null (then weights are x^2). Pure functions;
// n is a multiple of the type's block.
#ifndef MODELSMITH_WORKERS_QUANT_GGML_IQ4_H_
#define MODELSMITH_WORKERS_QUANT_GGML_IQ4_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

void QuantizeRowIQ4_NL(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowIQ4_XS(const float* x, size_t n, const float* qw, uint8_t* out);
void DequantizeRowIQ4_NL(const uint8_t* in, size_t n, float* y);
void DequantizeRowIQ4_XS(const uint8_t* in, size_t n, float* y);

// The search behind both: the weighted fit sums of one 32-element block `xb` at the 16 inverse
// scales `ids` (sum of w * q * x and of w * q * q in element order, q the level nearest id * x).
// The AVX2 version (simd_avx2.h) measures eight scales per pass, one per lane, with the same
// roundings; the quantizers use it where the CPU has AVX2.
inline constexpr int kIq4Candidates = 16;
void Iq4CandidateFitsScalar(const float* xb, const float* weight, const float* ids, float* sumqx, float* sumq2);
// The level nearest x (as a float) for floor(2x) + 256 clamped to [0, 511]: what the AVX2
// search looks up.
const float* Iq4LevelByTwiceFloor();

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_GGML_IQ4_H_
