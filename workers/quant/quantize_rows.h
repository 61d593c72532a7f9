// One entry point to every ggml row format Modelsmith writes or reads: the block quantizers and
// the plain float types (F32, F16, BF16). Pure functions.
#ifndef MODELSMITH_WORKERS_QUANT_QUANTIZE_ROWS_H_
#define MODELSMITH_WORKERS_QUANT_QUANTIZE_ROWS_H_

#include <cstddef>
#include <cstdint>

#include "workers/tensor/ggml_types.h"

namespace modelsmith {

// True for F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
bool CanEncode(GgmlType type);

// Encodes `rows` rows of `row_elements` floats (row_elements a multiple of the type's block) into
// `out`, which holds rows * GgmlRowBytes(type, row_elements) bytes. REQUIRES: CanEncode(type).
void EncodeRows(GgmlType type, const float* x, size_t rows, size_t row_elements, uint8_t* out);

// The inverse. REQUIRES: CanEncode(type).
void DecodeRows(GgmlType type, const uint8_t* in, size_t rows, size_t row_elements, float* y);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_QUANTIZE_ROWS_H_
