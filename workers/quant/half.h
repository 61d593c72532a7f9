// IEEE binary16 and bfloat16 conversions. Pure functions, no I/O.
// FP32 -> FP16/BF16 round to nearest, ties to even (what ggml's GGML_FP32_TO_FP16 and F16C's
// _cvtss_sh(x, 0) do, shared/reference/formats.md §4); NaN stays NaN (quiet), overflow gives Inf,
// and FP16 subnormals are produced exactly. FP16 -> FP32 is exact; a signalling NaN comes back
// quiet, as F16C does.
#ifndef MODELSMITH_WORKERS_QUANT_HALF_H_
#define MODELSMITH_WORKERS_QUANT_HALF_H_

#include <cstdint>

namespace modelsmith {

uint16_t Fp32ToFp16(float value);
float Fp16ToFp32(uint16_t bits);

// FP16 stored little-endian at an unaligned address (block scales).
void StoreFp16(uint8_t* p, float value);
float LoadFp16(const uint8_t* p);

uint16_t Fp32ToBf16(float value);
float Bf16ToFp32(uint16_t bits);

// The float type a tensor is stored in, for arithmetic that PyTorch does in that type: an op on
// half or bfloat16 tensors computes in FP32 and rounds the result to the narrow type.
enum class StoredFloat { kF32, kF16, kBF16 };

// `value` rounded to `type` (nearest, ties to even) and widened back to FP32.
float RoundTo(StoredFloat type, float value);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_HALF_H_
