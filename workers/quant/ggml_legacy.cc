#include "workers/quant/ggml_legacy.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "workers/quant/half.h"

namespace modelsmith {
namespace {

constexpr size_t kQK = kLegacyBlockElements;

// The block's value of largest magnitude with its sign; the first one wins ties.
float SignedMax(const float* x) {
  float amax = 0.0f;
  float max = 0.0f;
  for (size_t j = 0; j < kQK; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void MinMax(const float* x, float* min, float* max) {
  *min = FLT_MAX;
  *max = -FLT_MAX;
  for (size_t j = 0; j < kQK; ++j) {
    *min = std::min(*min, x[j]);
    *max = std::max(*max, x[j]);
  }
}

}  // namespace

void QuantizeRowQ8_0(const float* x, size_t n, uint8_t* out) {
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 34) {
    float amax = 0.0f;
    for (size_t j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreFp16(out, d);
    for (size_t j = 0; j < kQK; ++j) out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x[j] * id)));
  }
}

// The legacy types round like ggml's reference: `x*id + 8.5f` is two roundings, the product and
// then the sum. ggml is C compiled without floating-point contraction, and so is this library
// (-ffp-contract=off, CMakeLists.txt); a fused multiply-add rounds once and differs on blocks
// whose product lands on a rounding boundary (37 of 131,072 blocks of a real-size Q4_0 tensor).
void QuantizeRowQ4_0(const float* x, size_t n, uint8_t* out) {
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 18) {
    const float d = SignedMax(x) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreFp16(out, d);
    for (size_t j = 0; j < kQK / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + kQK / 2] * id + 8.5f)));
      out[2 + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void QuantizeRowQ4_1(const float* x, size_t n, uint8_t* out) {
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 20) {
    float min, max;
    MinMax(x, &min, &max);
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreFp16(out, d);
    StoreFp16(out + 2, min);
    for (size_t j = 0; j < kQK / 2; ++j) {
      const int lo = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - min) * id + 0.5f)));
      const int hi = std::min(15, static_cast<int>(static_cast<int8_t>((x[j + kQK / 2] - min) * id + 0.5f)));
      out[4 + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

void QuantizeRowQ5_0(const float* x, size_t n, uint8_t* out) {
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 22) {
    const float d = SignedMax(x) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreFp16(out, d);
    uint32_t qh = 0;
    for (size_t j = 0; j < kQK / 2; ++j) {
      const int lo = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
      const int hi = std::min(31, static_cast<int>(static_cast<int8_t>(x[j + kQK / 2] * id + 16.5f)));
      out[6 + j] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
      qh |= ((static_cast<uint32_t>(lo) & 0x10u) >> 4) << j;
      qh |= ((static_cast<uint32_t>(hi) & 0x10u) >> 4) << (j + kQK / 2);
    }
    std::memcpy(out + 2, &qh, 4);
  }
}

void QuantizeRowQ5_1(const float* x, size_t n, uint8_t* out) {
  for (size_t b = 0; b < n / kQK; ++b, x += kQK, out += 24) {
    float min, max;
    MinMax(x, &min, &max);
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    StoreFp16(out, d);
    StoreFp16(out + 2, min);
    uint32_t qh = 0;
    for (size_t j = 0; j < kQK / 2; ++j) {
      const uint32_t lo = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
      const uint32_t hi = static_cast<uint8_t>((x[j + kQK / 2] - min) * id + 0.5f);
      out[8 + j] = static_cast<uint8_t>((lo & 0x0F) | ((hi & 0x0F) << 4));
      qh |= ((lo & 0x10u) >> 4) << j;
      qh |= ((hi & 0x10u) >> 4) << (j + kQK / 2);
    }
    std::memcpy(out + 4, &qh, 4);
  }
}

void DequantizeRowQ8_0(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += 34, y += kQK) {
    const float d = LoadFp16(in);
    for (size_t j = 0; j < kQK; ++j) y[j] = static_cast<int8_t>(in[2 + j]) * d;
  }
}

void DequantizeRowQ4_0(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += 18, y += kQK) {
    const float d = LoadFp16(in);
    for (size_t j = 0; j < kQK / 2; ++j) {
      y[j] = ((in[2 + j] & 0x0F) - 8) * d;
      y[j + kQK / 2] = ((in[2 + j] >> 4) - 8) * d;
    }
  }
}

void DequantizeRowQ4_1(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += 20, y += kQK) {
    const float d = LoadFp16(in);
    const float m = LoadFp16(in + 2);
    for (size_t j = 0; j < kQK / 2; ++j) {
      y[j] = (in[4 + j] & 0x0F) * d + m;
      y[j + kQK / 2] = (in[4 + j] >> 4) * d + m;
    }
  }
}

void DequantizeRowQ5_0(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += 22, y += kQK) {
    const float d = LoadFp16(in);
    uint32_t qh;
    std::memcpy(&qh, in + 2, 4);
    for (size_t j = 0; j < kQK / 2; ++j) {
      const int lo = (in[6 + j] & 0x0F) | static_cast<int>(((qh >> j) << 4) & 0x10u);
      const int hi = (in[6 + j] >> 4) | static_cast<int>((qh >> (j + 12)) & 0x10u);
      y[j] = (lo - 16) * d;
      y[j + kQK / 2] = (hi - 16) * d;
    }
  }
}

void DequantizeRowQ5_1(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += 24, y += kQK) {
    const float d = LoadFp16(in);
    const float m = LoadFp16(in + 2);
    uint32_t qh;
    std::memcpy(&qh, in + 4, 4);
    for (size_t j = 0; j < kQK / 2; ++j) {
      const int lo = (in[8 + j] & 0x0F) | static_cast<int>(((qh >> j) << 4) & 0x10u);
      const int hi = (in[8 + j] >> 4) | static_cast<int>((qh >> (j + 12)) & 0x10u);
      y[j] = lo * d + m;
      y[j + kQK / 2] = hi * d + m;
    }
  }
}

}  // namespace modelsmith
