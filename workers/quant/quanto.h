// optimum-quanto's weight quantizers (formats.md §6; optimum/quanto/library/quantize.py and
// tensor/optimizers). Pure functions. Arithmetic follows PyTorch on the weight's own dtype: every
// op on half/bfloat16 values computes in FP32 and rounds to that dtype (StoredFloat).
//
// qint8 (AbsmaxOptimizer, axis 0): scale = max|row| / 127 (rounded to the dtype);
//   q = clamp(round_half_even(w / scale), -128, 127), with w / scale rounded to the dtype first.
// qint4 (MaxOptimizer, affine, per group of `group` elements along a row, the grouped tensor being
//   a plain reshape [numel / group, group]): scale = (max - min) / 15 and shift = -min (each op
//   rounded); q = clamp(round_half_even(((w + shift) / scale)), 0, 15). Dequant: q*scale - shift.
// A NaN quotient (0 / 0 for a constant group) gives q = 0, as torch's cast on x86 does.
//
// qint4 packing (packed.pack_weights): the grouped tensor [rows, group] becomes [ceil(rows/2),
// group] bytes; byte (r, c) holds row r in the low nibble and row r + ceil(rows/2) in the high.
#ifndef MODELSMITH_WORKERS_QUANT_QUANTO_H_
#define MODELSMITH_WORKERS_QUANT_QUANTO_H_

#include <cstddef>
#include <cstdint>

#include "workers/quant/half.h"

namespace modelsmith {

// quanto's default group for qint4 of a weight with `in_features` columns: 128 when it divides
// and in_features > 128, stepping down by 32 (96, 64, 32); 0 (per output channel) when none fits.
size_t QuantoDefaultGroup(size_t in_features);

// One row (output channel) of `n` values; returns the scale, already rounded to `type`.
float QuantoInt8QuantizeRow(StoredFloat type, const float* w, size_t n, int8_t* q);
void QuantoInt8DequantizeRow(StoredFloat type, const int8_t* q, size_t n, float scale, float* y);

// One group of `n` values into codes 0..15 (one per byte, unpacked); writes scale and shift.
void QuantoInt4QuantizeGroup(StoredFloat type, const float* w, size_t n, uint8_t* q, float* scale, float* shift);
void QuantoInt4DequantizeGroup(StoredFloat type, const uint8_t* q, size_t n, float scale, float shift, float* y);

// Packs grouped row `low` (row r) and `high` (row r + R, or nullptr past the end) into `out`.
void QuantoPackRowPair(const uint8_t* low, const uint8_t* high, size_t group, uint8_t* out);
// The inverse: splits one packed row into its two grouped rows (`high` may be nullptr).
void QuantoUnpackRowPair(const uint8_t* packed, size_t group, uint8_t* low, uint8_t* high);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_QUANTO_H_
