#include "workers/quant/ggml_ternary.h"

#include <algorithm>
#include <cmath>

#include "workers/quant/half.h"

namespace modelsmith {
namespace {

constexpr int kQK = 256;
constexpr int kTQ1QsBytes = 48, kTQ1QhBytes = 4, kTQ1Bytes = 54, kTQ2Bytes = 66;

float AbsMax(const float* x) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
}

// -1, 0, 1 -> 0, 1, 2 (lroundf: halves away from zero).
int Trit(float value, float id) { return static_cast<int>(std::lroundf(value * id)) + 1; }

// `count` trits (the first most significant) as a fraction of 243 rounded up to a byte, which
// the dequantizer reads back by multiplying by powers of 3.
uint8_t PackTrits(const float* x, int count, int stride, float id) {
  uint8_t q = 0;
  for (int n = 0; n < count; ++n) q = static_cast<uint8_t>(q * 3 + Trit(x[n * stride], id));
  for (int n = count; n < 5; ++n) q = static_cast<uint8_t>(q * 3);
  return static_cast<uint8_t>((static_cast<uint16_t>(q) * 256 + (243 - 1)) / 243);
}

float UnpackTrit(uint8_t byte, uint8_t power_of_three, float d) {
  const uint8_t q = static_cast<uint8_t>(byte * power_of_three);
  const int16_t xi = static_cast<int16_t>((static_cast<uint16_t>(q) * 3) >> 8);
  return static_cast<float>(xi - 1) * d;
}

constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};

}  // namespace

void QuantizeRowTQ1_0(const float* x, size_t n, uint8_t* out) {
  for (size_t b = 0; b < n / kQK; ++b, out += kTQ1Bytes) {
    const float d = AbsMax(x);
    const float id = d ? 1.0f / d : 0.0f;
    StoreFp16(out + kTQ1QsBytes + kTQ1QhBytes, d);
    // 32 bytes of five trits along 32-element strides, then 16 bytes along 16-element strides.
    for (int m = 0; m < 32; ++m) out[m] = PackTrits(x + m, 5, 32, id);
    x += 5 * 32;
    for (int m = 0; m < 16; ++m) out[32 + m] = PackTrits(x + m, 5, 16, id);
    x += 5 * 16;
    // The last 16 values: four trits per byte, the first shifted to the most significant trit.
    for (int j = 0; j < kTQ1QhBytes; ++j) out[kTQ1QsBytes + j] = PackTrits(x + j, 4, kTQ1QhBytes, id);
    x += 4 * kTQ1QhBytes;
  }
}

void QuantizeRowTQ2_0(const float* x, size_t n, uint8_t* out) {
  for (size_t b = 0; b < n / kQK; ++b, out += kTQ2Bytes) {
    const float d = AbsMax(x);
    const float id = d ? 1.0f / d : 0.0f;
    StoreFp16(out + 64, d);
    for (int j = 0; j < 64; j += 32, x += 4 * 32) {
      for (int m = 0; m < 32; ++m) {
        uint8_t q = 0;
        for (int k = 0; k < 4; ++k) q = static_cast<uint8_t>(q + ((Trit(x[m + k * 32], id) & 3) << (2 * k)));
        out[j + m] = q;
      }
    }
  }
}

void DequantizeRowTQ1_0(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += kTQ1Bytes) {
    const float d = LoadFp16(in + kTQ1QsBytes + kTQ1QhBytes);
    for (int k = 0; k < 5; ++k) {
      for (int m = 0; m < 32; ++m) *y++ = UnpackTrit(in[m], kPow3[k], d);
    }
    for (int k = 0; k < 5; ++k) {
      for (int m = 0; m < 16; ++m) *y++ = UnpackTrit(in[32 + m], kPow3[k], d);
    }
    for (int k = 0; k < 4; ++k) {
      for (int j = 0; j < kTQ1QhBytes; ++j) *y++ = UnpackTrit(in[kTQ1QsBytes + j], kPow3[k], d);
    }
  }
}

void DequantizeRowTQ2_0(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQK; ++b, in += kTQ2Bytes) {
    const float d = LoadFp16(in + 64);
    for (int j = 0; j < 64; j += 32) {
      for (int k = 0; k < 4; ++k) {
        for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(((in[j + m] >> (2 * k)) & 3) - 1) * d;
      }
    }
  }
}

}  // namespace modelsmith
