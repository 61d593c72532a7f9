// ggml's ternary types (values -1, 0, 1 times one FP16 scale per 256 elements), bit for bit with
// ggml's reference quantizers (ggml-quants.c quantize_row_tq*_ref; they take no importance data):
//   TQ1_0: 1.6875 bits per weight: five trits per byte (base 3, scaled to a byte by a ceiling
//          division by 243) for 240 values, four per byte for the last 16; then the scale.
//   TQ2_0: 2.0625 bits per weight: four 2-bit codes per byte; then the scale.
// Pure functions; n is a multiple of 256.
#ifndef MODELSMITH_WORKERS_QUANT_GGML_TERNARY_H_
#define MODELSMITH_WORKERS_QUANT_GGML_TERNARY_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

void QuantizeRowTQ1_0(const float* x, size_t n, uint8_t* out);
void QuantizeRowTQ2_0(const float* x, size_t n, uint8_t* out);
void DequantizeRowTQ1_0(const uint8_t* in, size_t n, float* y);
void DequantizeRowTQ2_0(const uint8_t* in, size_t n, float* y);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_GGML_TERNARY_H_
