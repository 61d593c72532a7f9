// One entry point to every ggml row format Modelsmith writes or reads: the block quantizers and
// the plain float types (F32, F16, BF16). Pure functions.
#ifndef MODELSMITH_WORKERS_QUANT_QUANTIZE_ROWS_H_
#define MODELSMITH_WORKERS_QUANT_QUANTIZE_ROWS_H_

#include <cstddef>
#include <cstdint>

#include "workers/tensor/ggml_types.h"

namespace modelsmith {

// True for F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
// IQ4_XS, IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M, TQ1_0, TQ2_0: every type
// llama-quantize writes.
bool CanEncode(GgmlType type);

// True for the types whose ggml quantizer takes an importance matrix (quant_weights).
bool TakesImportance(GgmlType type);
// True for the types ggml cannot write without one (IQ2_XXS, IQ2_XS, IQ1_S).
bool NeedsImportance(GgmlType type);

// Encodes `rows` rows of `row_elements` floats (row_elements a multiple of the type's block) into
// `out`, which holds rows * GgmlRowBytes(type, row_elements) bytes. `importance`, when not null,
// holds row_elements weights (one per column, the same for every row) and is used as ggml uses
// quant_weights by a type that TakesImportance. REQUIRES: CanEncode(type), and importance for a
// type that NeedsImportance.
void EncodeRows(GgmlType type, const float* x, size_t rows, size_t row_elements, uint8_t* out,
                const float* importance = nullptr);

// The inverse. REQUIRES: CanEncode(type).
void DecodeRows(GgmlType type, const uint8_t* in, size_t rows, size_t row_elements, float* y);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_QUANTIZE_ROWS_H_
