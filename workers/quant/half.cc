#include "workers/quant/half.h"

#include <cstring>

namespace modelsmith {
namespace {

uint32_t BitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float FloatOf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace

uint16_t Fp32ToFp16(float value) {
  const uint32_t x = BitsOf(value);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));  // NaN, quiet
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to >= 65520: Inf
  if (abs >= 0x38800000u) {                                              // normal in FP16 (>= 2^-14)
    // Re-bias the exponent (127 -> 15) and round the 23-bit mantissa to 10 bits, ties to even.
    const uint32_t mantissa_round = 0xFFFu + ((abs >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((abs - 0x38000000u + mantissa_round) >> 13));
  }
  if (abs < 0x33000000u) return sign;  // below half the smallest subnormal (2^-25): +-0
  // Subnormal: shift the implicit-1 mantissa into place and round to nearest even.
  const uint32_t exponent = abs >> 23;
  const uint32_t mantissa = (abs & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126 - exponent;  // 14..24
  uint32_t half = mantissa >> shift;
  const uint32_t rest = mantissa & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

float Fp16ToFp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  if (exponent == 0x1F) {
    // Inf, or NaN made quiet, as F16C's vcvtph2ps (and so ggml on x86) does.
    return FloatOf(sign | 0x7F800000u | (mantissa << 13) | (mantissa != 0 ? 0x400000u : 0u));
  }
  if (exponent != 0) return FloatOf(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0) return FloatOf(sign);
  // Subnormal: normalise.
  int e = -1;
  do {
    ++e;
    mantissa <<= 1;
  } while ((mantissa & 0x400u) == 0);
  return FloatOf(sign | ((112 - e) << 23) | ((mantissa & 0x3FFu) << 13));
}

void StoreFp16(uint8_t* p, float value) {
  const uint16_t h = Fp32ToFp16(value);
  std::memcpy(p, &h, 2);
}

float LoadFp16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return Fp16ToFp32(h);
}

uint16_t Fp32ToBf16(float value) {
  const uint32_t x = BitsOf(value);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN, quiet
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

float Bf16ToFp32(uint16_t bits) { return FloatOf(static_cast<uint32_t>(bits) << 16); }

float RoundTo(StoredFloat type, float value) {
  switch (type) {
    case StoredFloat::kF16: return Fp16ToFp32(Fp32ToFp16(value));
    case StoredFloat::kBF16: return Bf16ToFp32(Fp32ToBf16(value));
    case StoredFloat::kF32: break;
  }
  return value;
}

}  // namespace modelsmith
