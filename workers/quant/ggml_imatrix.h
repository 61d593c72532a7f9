// The importance-matrix versions of ggml's legacy and K-quant quantizers (ggml-quants.c
// `quantize_row_*_impl` with quant_weights), bit for bit. `x` is one whole row of `n` values and
// `qw` its n weights (the importance matrix entry for the row's input columns): the legacy types
// weigh each value by qw * sqrt(sigma2 + x^2) with sigma2 the row's mean square, the K-quants with
// their super-block's. Pure functions; n is a multiple of the type's block.
//
// Q8_0 takes no weights in ggml; with weights it is the reference quantizer.
#ifndef MODELSMITH_WORKERS_QUANT_GGML_IMATRIX_H_
#define MODELSMITH_WORKERS_QUANT_GGML_IMATRIX_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

void QuantizeRowQ4_0Weighted(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowQ4_1Weighted(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowQ5_0Weighted(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowQ5_1Weighted(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowQ2_KWeighted(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowQ3_KWeighted(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowQ4_KWeighted(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowQ5_KWeighted(const float* x, size_t n, const float* qw, uint8_t* out);
void QuantizeRowQ6_KWeighted(const float* x, size_t n, const float* qw, uint8_t* out);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_GGML_IMATRIX_H_
