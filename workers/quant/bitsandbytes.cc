#include "workers/quant/bitsandbytes.h"

#include "workers/quant/simd_avx2.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>

namespace modelsmith {
namespace {

// backends/utils.py: what the default backend quantizes against.
constexpr std::array<float, 16> kNf4Table = {-1.0f,
                                             -0.6961928009986877f,
                                             -0.5250730514526367f,
                                             -0.39491748809814453f,
                                             -0.28444138169288635f,
                                             -0.18477343022823334f,
                                             -0.09105003625154495f,
                                             0.0f,
                                             0.07958029955625534f,
                                             0.16093020141124725f,
                                             0.24611230194568634f,
                                             0.33791524171829224f,
                                             0.44070982933044434f,
                                             0.5626170039176941f,
                                             0.7229568362236023f,
                                             1.0f};
constexpr std::array<float, 16> kFp4QuantizeTable = {0.0f,     0.0052f, 0.6667f,  1.0f,     0.3333f,  0.5f,
                                                     0.1667f,  0.25f,   0.0f,     -0.0052f, -0.6667f, -1.0f,
                                                     -0.3333f, -0.5f,   -0.1667f, -0.25f};

std::array<float, 16> Fp4QuantMap() {
  // functional.get_4bit_type("fp4"): the raw table in bit-pattern order, divided by its max.
  constexpr std::array<float, 16> raw = {0.0f,  0.0625f,  8.0f,  12.0f,  4.0f,  6.0f,  2.0f,  3.0f,
                                         -0.0f, -0.0625f, -8.0f, -12.0f, -4.0f, -6.0f, -2.0f, -3.0f};
  std::array<float, 16> map{};
  for (size_t i = 0; i < raw.size(); ++i) map[i] = raw[i] / 12.0f;
  return map;
}

// torch.argmin(|s - table|): the first index of the least distance; NaN distances win.
uint8_t NearestOf16(const std::array<float, 16>& table, float s) {
  if (std::isnan(s)) return 0;
  uint8_t best = 0;
  float best_distance = std::fabs(s - table[0]);
  for (uint8_t k = 1; k < 16; ++k) {
    const float d = std::fabs(s - table[k]);
    if (d < best_distance) {
      best_distance = d;
      best = k;
    }
  }
  return best;
}

// The same over a sorted 256-entry table without duplicates: the answer is one of the two
// entries around s.
uint8_t NearestSorted256(const std::array<float, 256>& table, float s) {
  if (std::isnan(s)) return 0;
  const size_t upper = std::lower_bound(table.begin(), table.end(), s) - table.begin();
  if (upper == 0) return 0;
  if (upper == table.size()) return 255;
  const float below = std::fabs(s - table[upper - 1]);
  const float above = std::fabs(s - table[upper]);
  return static_cast<uint8_t>(above < below ? upper : upper - 1);
}

float AbsMax(const float* x, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// torch.linspace(start, end, steps) for float32 on CPU: start + step*i in the first half,
// end - step*(steps-1-i) in the second.
std::vector<float> Linspace(float start, float end, int steps) {
  std::vector<float> out(steps);
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  for (int i = 0; i < steps; ++i) {
    out[i] = i < halfway ? start + step * static_cast<float>(i) : end - step * static_cast<float>(steps - 1 - i);
  }
  return out;
}

std::array<float, 256> MakeDynamicMap() {
  constexpr int kMaxExponentBits = 7;
  constexpr int kNonSignBits = 7;  // signed, 8 bits
  std::vector<float> data;
  for (int i = 0; i < kMaxExponentBits; ++i) {
    const int fraction_items = (1 << (i + kNonSignBits - kMaxExponentBits)) + 1;
    const std::vector<float> boundaries = Linspace(0.1f, 1.0f, fraction_items);
    const float scale = static_cast<float>(std::pow(10.0, -(kMaxExponentBits - 1) + i));
    for (int j = 0; j + 1 < fraction_items; ++j) {
      const float mean = (boundaries[j] + boundaries[j + 1]) / 2.0f;
      data.push_back(scale * mean);
      data.push_back(-(scale * mean));
    }
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  std::sort(data.begin(), data.end());
  std::array<float, 256> map{};
  std::copy(data.begin(), data.end(), map.begin());
  return map;
}

}  // namespace

float BnbInt8QuantizeRow(const float* x, size_t n, int8_t* q) {
  if (CpuHasAvx2Fma16c()) return BnbInt8QuantizeRowAvx2(x, n, q);
  return BnbInt8QuantizeRowScalar(x, n, q);
}

float BnbInt8QuantizeRowScalar(const float* x, size_t n, int8_t* q) {
  const float scb = AbsMax(x, n);
  const float factor = 127.0f / scb;
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i] * factor;
    q[i] = std::isnan(v) ? 0 : static_cast<int8_t>(std::clamp(std::nearbyint(v), -128.0f, 127.0f));
  }
  return scb;
}

void BnbInt8DequantizeRow(const int8_t* q, size_t n, float scb, float* y) {
  if (CpuHasAvx2Fma16c()) return BnbInt8DequantizeRowAvx2(q, n, scb, y);
  BnbInt8DequantizeRowScalar(q, n, scb, y);
}

void BnbInt8DequantizeRowScalar(const int8_t* q, size_t n, float scb, float* y) {
  constexpr float kInverse127 = 7.874015718698502e-3f;
  for (size_t i = 0; i < n; ++i) y[i] = static_cast<float>(q[i]) * scb * kInverse127;
}

bool IsValidBnb4Block(size_t block) {
  for (size_t b = 32; b <= 4096; b *= 2) {
    if (block == b) return true;
  }
  return false;
}

const std::array<float, 16>& Bnb4QuantMap(Bnb4Type type) {
  static const std::array<float, 16> fp4 = Fp4QuantMap();
  return type == Bnb4Type::kNf4 ? kNf4Table : fp4;
}

void Bnb4Quantize(Bnb4Type type, const float* x, size_t n, size_t block, uint8_t* packed, float* absmax) {
  const std::array<float, 16>& table = type == Bnb4Type::kNf4 ? kNf4Table : kFp4QuantizeTable;
  if (CpuHasAvx2Fma16c()) return Bnb4QuantizeAvx2(table.data(), x, n, block, packed, absmax);
  Bnb4QuantizeScalar(type, x, n, block, packed, absmax);
}

void Bnb4QuantizeScalar(Bnb4Type type, const float* x, size_t n, size_t block, uint8_t* packed, float* absmax) {
  const std::array<float, 16>& table = type == Bnb4Type::kNf4 ? kNf4Table : kFp4QuantizeTable;
  uint8_t high = 0;
  for (size_t start = 0, b = 0; start < n; start += block, ++b) {
    const size_t count = std::min(block, n - start);
    absmax[b] = AbsMax(x + start, count);
    const float inverse = 1.0f / absmax[b];
    for (size_t i = start; i < start + count; ++i) {
      const uint8_t code = NearestOf16(table, std::clamp(x[i] * inverse, -1.0f, 1.0f));
      if (i % 2 == 0) {
        high = code;
      } else {
        packed[i / 2] = static_cast<uint8_t>(high << 4 | code);
      }
    }
  }
  if (n % 2 == 1) packed[n / 2] = static_cast<uint8_t>(high << 4);
}

void Bnb4Dequantize(Bnb4Type type, const uint8_t* packed, size_t n, size_t block, const float* absmax, float* y) {
  const std::array<float, 16>& map = Bnb4QuantMap(type);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t byte = packed[i / 2];
    const uint8_t code = i % 2 == 0 ? byte >> 4 : byte & 0x0F;
    y[i] = map[code] * absmax[i / block];
  }
}

const std::array<float, 256>& BnbDynamicMap() {
  static const std::array<float, 256> map = MakeDynamicMap();
  return map;
}

NestedAbsmax BnbNestAbsmax(std::span<const float> absmax) {
  NestedAbsmax nested;
  double sum = 0;
  for (float a : absmax) sum += a;
  nested.offset = absmax.empty() ? 0.0f : static_cast<float>(sum / static_cast<double>(absmax.size()));
  const std::array<float, 256>& map = BnbDynamicMap();
  nested.codes.resize(absmax.size());
  std::vector<float> centred(kBnbNestedBlock);
  for (size_t start = 0; start < absmax.size(); start += kBnbNestedBlock) {
    const size_t count = std::min(kBnbNestedBlock, absmax.size() - start);
    for (size_t i = 0; i < count; ++i) centred[i] = absmax[start + i] - nested.offset;
    const float block_max = AbsMax(centred.data(), count);
    nested.nested_absmax.push_back(block_max);
    const float inverse = 1.0f / block_max;
    for (size_t i = 0; i < count; ++i) {
      nested.codes[start + i] = NearestSorted256(map, std::clamp(centred[i] * inverse, -1.0f, 1.0f));
    }
  }
  return nested;
}

void BnbUnnestAbsmax(const NestedAbsmax& nested, std::span<float> absmax) {
  const std::array<float, 256>& map = BnbDynamicMap();
  for (size_t i = 0; i < absmax.size() && i < nested.codes.size(); ++i) {
    absmax[i] = map[nested.codes[i]] * nested.nested_absmax[i / kBnbNestedBlock] + nested.offset;
  }
}

std::string PythonFloatRepr(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  char buffer[64];
  // Shortest round-trip digits in scientific form, then laid out the way Python's repr does:
  // positional for exponents -4..15, scientific with a two-digit exponent otherwise.
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  std::string sci(buffer, end);
  const size_t e = sci.find('e');
  const bool negative = sci[0] == '-';
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e; ++i) {
    if (sci[i] != '.') digits += sci[i];
  }
  const int exponent = std::stoi(sci.substr(e + 1));
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(-exponent - 1, '0') + digits;
    } else if (static_cast<size_t>(exponent) + 1 >= digits.size()) {
      out += digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp[16];
  std::snprintf(exp, sizeof exp, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp;
}

}  // namespace modelsmith
