// bitsandbytes' weight quantizers, as its default (CPU) backend computes them
// (bitsandbytes/backends/default/ops.py and backends/utils.py; formats.md §5). Pure functions.
//
// LLM.int8 (row-wise): SCB = max|w| of the row as FP32; q = round_half_even(w * (127 / SCB))
// in FP32. bitsandbytes casts the weight to FP16 before quantizing (Int8Params), so callers pass
// FP16-rounded values. An all-zero row (SCB = 0) gives q = 0 where torch would divide 0 by 0.
//
// NF4 / FP4 (block-wise over the flattened tensor): absmax = max|x| of each block (the last may be
// partial); s = clamp(x * (1 / absmax), -1, 1) in FP32; the code is the first index of least
// |s - CODE[k]| (torch.argmin), CODE being the backend's quantization table: NF4 the same numbers
// as the stored quant_map, FP4 the four-decimal table of backends/utils.py. A NaN (and so an
// all-zero block, 0 * inf) takes index 0, as argmin over NaN distances does. Two codes per byte,
// the even element in the high nibble; an odd count is padded with a zero nibble.
//
// Double quantization (compress_statistics): offset = mean(absmax); the centred absmax values are
// quantized block-wise (256) with the signed dynamic map (create_dynamic_map(signed=True)).
// Dequantized absmax = map[code] * nested_absmax[i / 256] + offset.
#ifndef MODELSMITH_WORKERS_QUANT_BITSANDBYTES_H_
#define MODELSMITH_WORKERS_QUANT_BITSANDBYTES_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace modelsmith {

// ---- LLM.int8 ----

// One row of `n` values. Writes n int8 codes and returns SCB (the row's absmax).
float BnbInt8QuantizeRow(const float* x, size_t n, int8_t* q);
// The scalar reference of the same (BnbInt8QuantizeRow uses AVX2 where it can).
float BnbInt8QuantizeRowScalar(const float* x, size_t n, int8_t* q);
// y = q * SCB * (1/127), the default backend's int8_vectorwise_dequant.
void BnbInt8DequantizeRow(const int8_t* q, size_t n, float scb, float* y);
void BnbInt8DequantizeRowScalar(const int8_t* q, size_t n, float scb, float* y);

// ---- 4-bit ----

enum class Bnb4Type { kNf4, kFp4 };

inline constexpr size_t kBnb4DefaultBlock = 64;
// 32, 64, ..., 4096 (quantize_4bit's allowed block sizes).
bool IsValidBnb4Block(size_t block);

// The quant_map a checkpoint stores (functional.get_4bit_type): 16 FP32 values.
const std::array<float, 16>& Bnb4QuantMap(Bnb4Type type);

// Quantizes `n` consecutive values of the flattened tensor, starting at a block boundary, into
// (n + 1) / 2 packed bytes and ceil(n / block) absmax values. Only the tensor's last piece may end
// in a partial block or an odd count.
void Bnb4Quantize(Bnb4Type type, const float* x, size_t n, size_t block, uint8_t* packed, float* absmax);
// The scalar reference of the same (Bnb4Quantize uses AVX2 where it can).
void Bnb4QuantizeScalar(Bnb4Type type, const float* x, size_t n, size_t block, uint8_t* packed, float* absmax);
// The inverse with the stored quant map: y[i] = map[code] * absmax[i / block].
void Bnb4Dequantize(Bnb4Type type, const uint8_t* packed, size_t n, size_t block, const float* absmax, float* y);

// ---- double quantization of absmax ----

inline constexpr size_t kBnbNestedBlock = 256;

// create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): 256 sorted FP32 values.
const std::array<float, 256>& BnbDynamicMap();

struct NestedAbsmax {
  std::vector<uint8_t> codes;        // one per absmax value
  std::vector<float> nested_absmax;  // one per 256 codes
  float offset = 0;                  // mean of the absmax values
};
NestedAbsmax BnbNestAbsmax(std::span<const float> absmax);
void BnbUnnestAbsmax(const NestedAbsmax& nested, std::span<float> absmax);

// Python's repr() of a float, which json.dumps uses for nested_offset ("0.0123", "1e-05").
std::string PythonFloatRepr(double value);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_BITSANDBYTES_H_
