// ggml's 1-bit lattice types, bit for bit with ggml's `quantize_iq1_s` / `quantize_iq1_m`
// (ggml-quants.c quantize_row_iq1_*_impl): 8-vectors of -1/0/1 from a 2048-point grid, shifted by
// +-1/8 per group, with 3-bit group scales:
//   IQ1_S: 32-element groups; an FP16 super-block scale; 11-bit indices (3 high bits in qh) and
//          the scale and shift sign in the top of each group's qh word.
//   IQ1_M: 16-element groups, each 8-vector with its own shift; the FP16 super-block scale is
//          spread over the top nibbles of the four scale words.
// Each group's levels come from an exhaustive search over the two cut points of its sorted
// values (a stable sort, as glibc's qsort sorts 32 elements). IQ1_S needs importance values
// (`qw`; NeedsImportance); IQ1_M takes them or null. Pure functions; n is a multiple of 256.
#ifndef MODELSMITH_WORKERS_QUANT_GGML_IQ1_H_
#define MODELSMITH_WORKERS_QUANT_GGML_IQ1_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

void QuantizeRowIQ1_S(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowIQ1_M(const float* x, size_t n, const float* qw, uint8_t* out);
void DequantizeRowIQ1_S(const uint8_t* in, size_t n, float* y);
void DequantizeRowIQ1_M(const uint8_t* in, size_t n, float* y);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_GGML_IQ1_H_
