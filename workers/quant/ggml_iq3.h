// ggml's 3-bit lattice types, bit for bit with ggml's `quantize_iq3_xxs` / `quantize_iq3_s`
// (ggml-quants.c quantize_row_iq3_xxs_impl / quantize_row_iq3_s_impl):
//   IQ3_XXS: 256-element super-blocks; per 32 elements eight indices into a 256-point grid of
//            4-vectors, 4 x 7 sign bits (the 8th of each 8 by parity) and a 4-bit scale.
//   IQ3_S:   a 512-point grid (a 9th index bit in qh), all 8 sign bits, 4-bit scales in pairs.
// Each 32-element block searches 31 (IQ3_XXS) or 19 (IQ3_S) scales, snapping every 4-vector of
// levels to the grid (or to its best weighted neighbour), and keeps the best weighted fit.
// `qw`: the row's importance values or null (weights x^2). Pure functions; n is a multiple of 256.
#ifndef MODELSMITH_WORKERS_QUANT_GGML_IQ3_H_
#define MODELSMITH_WORKERS_QUANT_GGML_IQ3_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

void QuantizeRowIQ3_XXS(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowIQ3_S(const float* x, size_t n, const float* qw, uint8_t* out);
void DequantizeRowIQ3_XXS(const uint8_t* in, size_t n, float* y);
void DequantizeRowIQ3_S(const uint8_t* in, size_t n, float* y);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_GGML_IQ3_H_
