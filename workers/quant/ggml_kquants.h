// ggml's 256-element super-block quantizers Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: the reference (no
// importance matrix) versions, bit for bit (ggml src/ggml-quants.c `quantize_row_q*_K_ref`;
// formats.md §4). Pure functions: `n` is a multiple of 256; `out` holds n/256 blocks.
//
// Each block searches per-sub-block scales (a weighted least-squares search over candidate
// scales; Q3_K refines levels iteratively), quantizes the scales themselves to 4 or 6 bits
// against an FP16 super-scale, then re-quantizes the values with the FP16-rounded effective
// scales. Rounding is round-half-to-even (ggml's nearest_int).
#ifndef MODELSMITH_WORKERS_QUANT_GGML_KQUANTS_H_
#define MODELSMITH_WORKERS_QUANT_GGML_KQUANTS_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

inline constexpr size_t kSuperBlockElements = 256;

void QuantizeRowQ2_K(const float* x, size_t n, uint8_t* out);
void QuantizeRowQ3_K(const float* x, size_t n, uint8_t* out);
void QuantizeRowQ4_K(const float* x, size_t n, uint8_t* out);
void QuantizeRowQ5_K(const float* x, size_t n, uint8_t* out);
void QuantizeRowQ6_K(const float* x, size_t n, uint8_t* out);

void DequantizeRowQ2_K(const uint8_t* in, size_t n, float* y);
void DequantizeRowQ3_K(const uint8_t* in, size_t n, float* y);
void DequantizeRowQ4_K(const uint8_t* in, size_t n, float* y);
void DequantizeRowQ5_K(const uint8_t* in, size_t n, float* y);
void DequantizeRowQ6_K(const uint8_t* in, size_t n, float* y);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_GGML_KQUANTS_H_
