#include "workers/quant/quantize_rows.h"

#include <cstring>

#include "workers/quant/ggml_imatrix.h"
#include "workers/quant/ggml_iq1.h"
#include "workers/quant/ggml_iq2.h"
#include "workers/quant/ggml_iq3.h"
#include "workers/quant/ggml_iq4.h"
#include "workers/quant/ggml_kquants.h"
#include "workers/quant/ggml_legacy.h"
#include "workers/quant/ggml_ternary.h"
#include "workers/quant/half.h"
#include "workers/quant/simd_avx2.h"

namespace modelsmith {
namespace {

using RowEncoder = void (*)(const float*, size_t, uint8_t*);
using RowDecoder = void (*)(const uint8_t*, size_t, float*);
using WeightedRowEncoder = void (*)(const float*, size_t, const float*, uint8_t*);

void EncodeF32(const float* x, size_t n, uint8_t* out) { std::memcpy(out, x, n * 4); }
void DecodeF32(const uint8_t* in, size_t n, float* y) { std::memcpy(y, in, n * 4); }
void EncodeF16(const float* x, size_t n, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = Fp32ToFp16(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}
void DecodeF16(const uint8_t* in, size_t n, float* y) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    y[i] = Fp16ToFp32(h);
  }
}
void EncodeBF16(const float* x, size_t n, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = Fp32ToBf16(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}
void DecodeBF16(const uint8_t* in, size_t n, float* y) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    y[i] = Bf16ToFp32(h);
  }
}

// The IQ quantizers take importance data or none through one function.
void EncodeIQ4_NL(const float* x, size_t n, uint8_t* out) { QuantizeRowIQ4_NL(x, n, nullptr, out); }
void EncodeIQ4_XS(const float* x, size_t n, uint8_t* out) { QuantizeRowIQ4_XS(x, n, nullptr, out); }
void EncodeIQ3_XXS(const float* x, size_t n, uint8_t* out) { QuantizeRowIQ3_XXS(x, n, nullptr, out); }
void EncodeIQ3_S(const float* x, size_t n, uint8_t* out) { QuantizeRowIQ3_S(x, n, nullptr, out); }
void EncodeIQ2_S(const float* x, size_t n, uint8_t* out) { QuantizeRowIQ2_S(x, n, nullptr, out); }
void EncodeIQ1_M(const float* x, size_t n, uint8_t* out) { QuantizeRowIQ1_M(x, n, nullptr, out); }

struct Codec {
  GgmlType type;
  RowEncoder encode;  // null: the type cannot be written without importance data
  RowDecoder decode;
  WeightedRowEncoder encode_weighted = nullptr;  // null: the type takes no importance matrix
};

constexpr Codec kCodecs[] = {
    {GgmlType::kF32, EncodeF32, DecodeF32},
    {GgmlType::kF16, EncodeF16, DecodeF16},
    {GgmlType::kBF16, EncodeBF16, DecodeBF16},
    {GgmlType::kQ8_0, QuantizeRowQ8_0, DequantizeRowQ8_0},
    {GgmlType::kQ4_0, QuantizeRowQ4_0, DequantizeRowQ4_0, QuantizeRowQ4_0Weighted},
    {GgmlType::kQ4_1, QuantizeRowQ4_1, DequantizeRowQ4_1, QuantizeRowQ4_1Weighted},
    {GgmlType::kQ5_0, QuantizeRowQ5_0, DequantizeRowQ5_0, QuantizeRowQ5_0Weighted},
    {GgmlType::kQ5_1, QuantizeRowQ5_1, DequantizeRowQ5_1, QuantizeRowQ5_1Weighted},
    {GgmlType::kQ2_K, QuantizeRowQ2_K, DequantizeRowQ2_K, QuantizeRowQ2_KWeighted},
    {GgmlType::kQ3_K, QuantizeRowQ3_K, DequantizeRowQ3_K, QuantizeRowQ3_KWeighted},
    {GgmlType::kQ4_K, QuantizeRowQ4_K, DequantizeRowQ4_K, QuantizeRowQ4_KWeighted},
    {GgmlType::kQ5_K, QuantizeRowQ5_K, DequantizeRowQ5_K, QuantizeRowQ5_KWeighted},
    {GgmlType::kQ6_K, QuantizeRowQ6_K, DequantizeRowQ6_K, QuantizeRowQ6_KWeighted},
    {GgmlType::kIQ4_NL, EncodeIQ4_NL, DequantizeRowIQ4_NL, QuantizeRowIQ4_NL},
    {GgmlType::kIQ4_XS, EncodeIQ4_XS, DequantizeRowIQ4_XS, QuantizeRowIQ4_XS},
    {GgmlType::kIQ3_XXS, EncodeIQ3_XXS, DequantizeRowIQ3_XXS, QuantizeRowIQ3_XXS},
    {GgmlType::kIQ3_S, EncodeIQ3_S, DequantizeRowIQ3_S, QuantizeRowIQ3_S},
    {GgmlType::kIQ2_XXS, nullptr, DequantizeRowIQ2_XXS, QuantizeRowIQ2_XXS},
    {GgmlType::kIQ2_XS, nullptr, DequantizeRowIQ2_XS, QuantizeRowIQ2_XS},
    {GgmlType::kIQ2_S, EncodeIQ2_S, DequantizeRowIQ2_S, QuantizeRowIQ2_S},
    {GgmlType::kIQ1_S, nullptr, DequantizeRowIQ1_S, QuantizeRowIQ1_S},
    {GgmlType::kIQ1_M, EncodeIQ1_M, DequantizeRowIQ1_M, QuantizeRowIQ1_M},
    {GgmlType::kTQ1_0, QuantizeRowTQ1_0, DequantizeRowTQ1_0},
    {GgmlType::kTQ2_0, QuantizeRowTQ2_0, DequantizeRowTQ2_0},
};

// F16 / BF16 rows through the casts' AVX2 kernels (the same roundings as Fp32ToFp16 /
// Fp32ToBf16; the NaN and overflow counts are not wanted here).
void EncodeF16Avx2(const float* x, size_t n, uint8_t* out) {
  uint64_t nan = 0, overflowed = 0;
  Fp32ToFp16RowAvx2(x, n, reinterpret_cast<uint16_t*>(out), &nan, &overflowed);
}
void EncodeBF16Avx2(const float* x, size_t n, uint8_t* out) {
  uint64_t nan = 0, overflowed = 0;
  Fp32ToBf16RowAvx2(x, n, reinterpret_cast<uint16_t*>(out), &nan, &overflowed);
}

// The AVX2 versions where the CPU has them; each computes what its scalar reference does.
constexpr Codec kAvx2Codecs[] = {
    {GgmlType::kF16, EncodeF16Avx2, DecodeF16Avx2},
    {GgmlType::kBF16, EncodeBF16Avx2, DecodeBF16},
    {GgmlType::kQ8_0, QuantizeRowQ8_0Avx2, DequantizeRowQ8_0Avx2},
    {GgmlType::kQ4_0, QuantizeRowQ4_0Avx2, DequantizeRowQ4_0Avx2, QuantizeRowQ4_0Weighted},
};

const Codec* Find(GgmlType type) {
  if (CpuHasAvx2Fma16c()) {
    for (const Codec& c : kAvx2Codecs) {
      if (c.type == type) return &c;
    }
  }
  for (const Codec& c : kCodecs) {
    if (c.type == type) return &c;
  }
  return nullptr;
}

}  // namespace

bool CanEncode(GgmlType type) { return Find(type) != nullptr; }

bool NeedsImportance(GgmlType type) {
  const Codec* codec = Find(type);
  return codec != nullptr && codec->encode == nullptr;
}

bool TakesImportance(GgmlType type) {
  const Codec* codec = Find(type);
  return codec != nullptr && codec->encode_weighted != nullptr;
}

void EncodeRows(GgmlType type, const float* x, size_t rows, size_t row_elements, uint8_t* out,
                const float* importance) {
  const Codec* codec = Find(type);
  const uint64_t row_bytes = *GgmlRowBytes(type, row_elements);
  if (importance != nullptr && codec->encode_weighted != nullptr) {
    for (size_t r = 0; r < rows; ++r) {
      codec->encode_weighted(x + r * row_elements, row_elements, importance, out + r * row_bytes);
    }
    return;
  }
  for (size_t r = 0; r < rows; ++r) codec->encode(x + r * row_elements, row_elements, out + r * row_bytes);
}

void DecodeRows(GgmlType type, const uint8_t* in, size_t rows, size_t row_elements, float* y) {
  const Codec* codec = Find(type);
  const uint64_t row_bytes = *GgmlRowBytes(type, row_elements);
  for (size_t r = 0; r < rows; ++r) codec->decode(in + r * row_bytes, row_elements, y + r * row_elements);
}

}  // namespace modelsmith
