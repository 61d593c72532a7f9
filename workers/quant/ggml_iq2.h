// ggml's 2-bit lattice types, bit for bit with ggml's `quantize_iq2_xxs` / `quantize_iq2_xs` /
// `quantize_iq2_s` (ggml-quants.c quantize_row_iq2_*_impl):
//   IQ2_XXS: 256-element super-blocks; per 32 elements four indices into a 256-point grid of
//            8-vectors, 4 x 7 sign bits (the 8th of each 8 by parity) and a 4-bit scale.
//   IQ2_XS:  per 16 elements two 9-bit indices into a 512-point grid with 7 sign bits each; 4-bit
//            scales per 16.
//   IQ2_S:   a 1024-point grid (2 more index bits in qh), all 8 sign bits, 4-bit scales per 16.
// IQ2_XXS and IQ2_XS need importance values (`qw`, n of them; ggml asserts them, llama-quantize
// refuses the types without them: callers check NeedsImportance); IQ2_S takes them or null.
// Pure functions; n is a multiple of 256.
#ifndef MODELSMITH_WORKERS_QUANT_GGML_IQ2_H_
#define MODELSMITH_WORKERS_QUANT_GGML_IQ2_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

void QuantizeRowIQ2_XXS(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowIQ2_XS(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowIQ2_S(const float* x, size_t n, const float* qw, uint8_t* out);
void DequantizeRowIQ2_XXS(const uint8_t* in, size_t n, float* y);
void DequantizeRowIQ2_XS(const uint8_t* in, size_t n, float* y);
void DequantizeRowIQ2_S(const uint8_t* in, size_t n, float* y);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_GGML_IQ2_H_
