// ggml's 32-element block quantizers Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: the reference (no importance
// matrix) versions, bit for bit (ggml src/ggml-quants.c `quantize_row_*_ref`; formats.md §4).
// Pure functions: `n` is a multiple of 32; `out` holds n/32 blocks.
//
// Rounding rules that must match: Q8_0 rounds half away from zero (roundf); Q4_0/Q5_0 take the
// signed value of largest magnitude (the first on ties) as max, d = max/-8 (or -16), and truncate
// x*id + 8.5 (16.5) with the multiply-add fused, as ggml compiled with FMA does; Q4_1/Q5_1 use
// d = (max-min)/15 (31) and truncate (x-min)*id + 0.5. Scales are stored as FP16 but the FP32
// inverse drives the rounding.
#ifndef MODELSMITH_WORKERS_QUANT_GGML_LEGACY_H_
#define MODELSMITH_WORKERS_QUANT_GGML_LEGACY_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

inline constexpr size_t kLegacyBlockElements = 32;

void QuantizeRowQ8_0(const float* x, size_t n, uint8_t* out);
void QuantizeRowQ4_0(const float* x, size_t n, uint8_t* out);
void QuantizeRowQ4_1(const float* x, size_t n, uint8_t* out);
void QuantizeRowQ5_0(const float* x, size_t n, uint8_t* out);
void QuantizeRowQ5_1(const float* x, size_t n, uint8_t* out);

void DequantizeRowQ8_0(const uint8_t* in, size_t n, float* y);
void DequantizeRowQ4_0(const uint8_t* in, size_t n, float* y);
void DequantizeRowQ4_1(const uint8_t* in, size_t n, float* y);
void DequantizeRowQ5_0(const uint8_t* in, size_t n, float* y);
void DequantizeRowQ5_1(const uint8_t* in, size_t n, float* y);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_GGML_LEGACY_H_
