#include "workers/quant/cast.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "workers/quant/half.h"
#include "workers/quant/quantize_rows.h"
#include "workers/quant/simd_avx2.h"

namespace modelsmith {
namespace {

// A binary floating-point format narrower than double.
struct MiniFloat {
  int exponent_bits;
  int mantissa_bits;
  bool has_inf;  // exponent all ones, mantissa 0 is Inf (IEEE); else that pattern is finite
  uint32_t nan;  // the NaN written, without the sign
  uint32_t max;  // the largest finite value's bits
  int bias() const { return (1 << (exponent_bits - 1)) - 1; }
  int width() const { return 1 + exponent_bits + mantissa_bits; }
};

constexpr MiniFloat kE4M3{4, 3, false, 0x7F, 0x7E};
constexpr MiniFloat kE5M2{5, 2, true, 0x7E, 0x7B};
constexpr MiniFloat kHalf{5, 10, true, 0x7E00, 0x7BFF};
constexpr MiniFloat kBfloat{8, 7, true, 0x7FC0, 0x7F7F};

double DecodeMini(const MiniFloat& f, uint32_t bits) {
  const uint32_t sign = bits >> (f.width() - 1) & 1;
  const uint32_t exponent = bits >> f.mantissa_bits & ((1u << f.exponent_bits) - 1);
  const uint32_t mantissa = bits & ((1u << f.mantissa_bits) - 1);
  const uint32_t all_ones = (1u << f.exponent_bits) - 1;
  double v;
  if (f.has_inf && exponent == all_ones) {
    v = mantissa == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (!f.has_inf && exponent == all_ones && mantissa == ((1u << f.mantissa_bits) - 1)) {
    v = std::numeric_limits<double>::quiet_NaN();  // E4M3FN: only S.1111.111 is NaN
  } else if (exponent == 0) {
    v = std::ldexp(static_cast<double>(mantissa), 1 - f.bias() - f.mantissa_bits);
  } else {
    v = std::ldexp(static_cast<double>(mantissa | (1u << f.mantissa_bits)),
                   static_cast<int>(exponent) - f.bias() - f.mantissa_bits);
  }
  return sign ? -v : v;
}

// Nearest `f` value to `x` (ties to even), with the special-value rules of cast.h; F8 formats
// (no IEEE overflow) saturate.
uint32_t EncodeMini(const MiniFloat& f, double x, bool saturating, CastCounts* counts) {
  const uint32_t sign = std::signbit(x) ? 1u << (f.width() - 1) : 0;
  if (std::isnan(x)) {
    ++counts->nan;
    return sign | f.nan;
  }
  const double a = std::fabs(x);
  const uint32_t inf = ((1u << f.exponent_bits) - 1) << f.mantissa_bits;
  if (std::isinf(a)) {
    if (f.has_inf) return sign | inf;  // E5M2 keeps Inf even when saturating finite values
    ++counts->saturated;
    return sign | f.max;
  }
  if (a == 0) return sign;
  const int min_exponent = 1 - f.bias();  // of normal numbers
  int e;
  std::frexp(a, &e);                       // a = m * 2^e, m in [0.5, 1)
  --e;                                     // a = m' * 2^e, m' in [1, 2)
  if (e < min_exponent) e = min_exponent;  // subnormal: fixed exponent
  // q counts units of the last place at exponent e; it is exact in double.
  double q = std::nearbyint(std::ldexp(a, f.mantissa_bits - e));  // default rounding: ties to even
  uint64_t units = static_cast<uint64_t>(q);
  // Subnormals encode as the bare unit count; normals as (biased exponent, mantissa), and a
  // carry into the next binade falls out of the same arithmetic.
  uint64_t code;
  if (units < (uint64_t{1} << f.mantissa_bits)) {
    code = units;  // subnormal (or rounded down to zero)
  } else {
    code = (static_cast<uint64_t>(e + f.bias()) << f.mantissa_bits) + (units - (uint64_t{1} << f.mantissa_bits));
  }
  if (code > f.max) {
    if (saturating) {
      ++counts->saturated;
      return sign | f.max;
    }
    ++counts->overflowed;
    return sign | inf;
  }
  return sign | static_cast<uint32_t>(code);
}

double Load(DType t, const std::byte* p, size_t i) {
  switch (t) {
    case DType::kF64: {
      double v;
      std::memcpy(&v, p + 8 * i, 8);
      return v;
    }
    case DType::kF32: {
      float v;
      std::memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case DType::kF16: {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      return DecodeMini(kHalf, v);
    }
    case DType::kBF16: {
      uint16_t v;
      std::memcpy(&v, p + 2 * i, 2);
      return DecodeMini(kBfloat, v);
    }
    case DType::kF8E4M3: return DecodeMini(kE4M3, static_cast<uint8_t>(p[i]));
    case DType::kF8E5M2: return DecodeMini(kE5M2, static_cast<uint8_t>(p[i]));
    default: return 0;
  }
}

// The general path: decode exactly to double, encode with one rounding.
void CastGeneral(DType from, DType to, const std::byte* in, size_t n, std::byte* out, CastCounts* counts) {
  for (size_t i = 0; i < n; ++i) {
    const double x = Load(from, in, i);
    switch (to) {
      case DType::kF64: std::memcpy(out + 8 * i, &x, 8); break;
      case DType::kF32: {
        const float f = static_cast<float>(x);  // round to nearest even
        if (std::isnan(x))
          ++counts->nan;
        else if (std::isinf(f) && !std::isinf(x))
          ++counts->overflowed;
        std::memcpy(out + 4 * i, &f, 4);
        break;
      }
      case DType::kF16:
      case DType::kBF16: {
        const uint16_t h = static_cast<uint16_t>(EncodeMini(to == DType::kF16 ? kHalf : kBfloat, x, false, counts));
        std::memcpy(out + 2 * i, &h, 2);
        break;
      }
      case DType::kF8E4M3: out[i] = static_cast<std::byte>(EncodeMini(kE4M3, x, true, counts)); break;
      case DType::kF8E5M2: out[i] = static_cast<std::byte>(EncodeMini(kE5M2, x, true, counts)); break;
      default: break;
    }
  }
}

}  // namespace

bool IsCastableFloat(DType dtype) {
  switch (dtype) {
    case DType::kF64:
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kF8E4M3:
    case DType::kF8E5M2: return true;
    default: return false;
  }
}

void CastElements(DType from, DType to, const std::byte* in, size_t n, std::byte* out, CastCounts* counts) {
  if (from == to) {
    std::memcpy(out, in, n * (DTypeBits(from) / 8));
    return;
  }
  if (from == DType::kF64 || to == DType::kF64) {
    CastGeneral(from, to, in, n, out, counts);
    return;
  }
  // Every other source is exact in F32, so decoding to F32 and rounding once from there is the
  // same as rounding from the exact value. Blocks of 4096 stay in L1.
  constexpr size_t kBlock = 4096;
  float values[kBlock];
  const size_t in_width = DTypeBits(from) / 8;
  const size_t out_width = DTypeBits(to) / 8;
  for (size_t begin = 0; begin < n; begin += kBlock) {
    const size_t m = std::min(kBlock, n - begin);
    const std::byte* src = in + begin * in_width;
    switch (from) {
      case DType::kF32: std::memcpy(values, src, m * 4); break;
      case DType::kF16: DecodeRows(GgmlType::kF16, reinterpret_cast<const uint8_t*>(src), 1, m, values); break;
      case DType::kBF16:
        for (size_t i = 0; i < m; ++i) {
          uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          values[i] = Bf16ToFp32(h);
        }
        break;
      default:  // F8
        for (size_t i = 0; i < m; ++i) values[i] = static_cast<float>(Load(from, src, i));
    }
    std::byte* dst = out + begin * out_width;
    if ((to == DType::kF16 || to == DType::kBF16) && CpuHasAvx2Fma16c()) {
      // The same roundings and counts, eight values at a time (simd_avx2.h).
      uint16_t halves[kBlock];
      (to == DType::kF16 ? Fp32ToFp16RowAvx2 : Fp32ToBf16RowAvx2)(values, m, halves, &counts->nan, &counts->overflowed);
      std::memcpy(dst, halves, m * 2);
      continue;
    }
    for (size_t i = 0; i < m; ++i) {
      const float x = values[i];
      if (std::isnan(x)) ++counts->nan;
      switch (to) {
        case DType::kF32: std::memcpy(dst + 4 * i, &x, 4); break;
        case DType::kF16:
        case DType::kBF16: {
          const uint16_t h = to == DType::kF16 ? Fp32ToFp16(x) : Fp32ToBf16(x);
          if ((h & 0x7FFF) == (to == DType::kF16 ? 0x7C00 : 0x7F80) && !std::isinf(x)) ++counts->overflowed;
          std::memcpy(dst + 2 * i, &h, 2);
          break;
        }
        default: {  // F8; NaN was counted above
          CastCounts f8;
          dst[i] = static_cast<std::byte>(EncodeMini(to == DType::kF8E4M3 ? kE4M3 : kE5M2, x, true, &f8));
          counts->saturated += f8.saturated;
        }
      }
    }
  }
}

}  // namespace modelsmith
