#include "workers/quant/quanto.h"

#include <algorithm>
#include <cmath>

namespace modelsmith {

size_t QuantoDefaultGroup(size_t in_features) {
  if (in_features <= 128) return 0;
  for (size_t group = 128; group >= 32; group -= 32) {
    if (in_features % group == 0) return group;
  }
  return 0;
}

float QuantoInt8QuantizeRow(StoredFloat type, const float* w, size_t n, int8_t* q) {
  float absmax = 0;
  for (size_t i = 0; i < n; ++i) absmax = std::max(absmax, std::fabs(w[i]));
  const float scale = RoundTo(type, absmax / 127.0f);
  for (size_t i = 0; i < n; ++i) {
    const float v = RoundTo(type, w[i] / scale);
    q[i] = std::isnan(v) ? 0 : static_cast<int8_t>(std::clamp(std::nearbyint(v), -128.0f, 127.0f));
  }
  return scale;
}

void QuantoInt8DequantizeRow(StoredFloat type, const int8_t* q, size_t n, float scale, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] = RoundTo(type, static_cast<float>(q[i]) * scale);
}

void QuantoInt4QuantizeGroup(StoredFloat type, const float* w, size_t n, uint8_t* q, float* scale, float* shift) {
  float lo = w[0], hi = w[0];
  for (size_t i = 1; i < n; ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  *scale = RoundTo(type, RoundTo(type, hi - lo) / 15.0f);
  *shift = -lo;
  for (size_t i = 0; i < n; ++i) {
    const float v = RoundTo(type, RoundTo(type, w[i] + *shift) / *scale);
    q[i] = std::isnan(v) ? 0 : static_cast<uint8_t>(std::clamp(std::nearbyint(v), 0.0f, 15.0f));
  }
}

void QuantoInt4DequantizeGroup(StoredFloat type, const uint8_t* q, size_t n, float scale, float shift, float* y) {
  for (size_t i = 0; i < n; ++i) y[i] = RoundTo(type, RoundTo(type, static_cast<float>(q[i]) * scale) - shift);
}

void QuantoPackRowPair(const uint8_t* low, const uint8_t* high, size_t group, uint8_t* out) {
  for (size_t c = 0; c < group; ++c) {
    out[c] = static_cast<uint8_t>((low[c] & 0x0F) | (high != nullptr ? (high[c] & 0x0F) << 4 : 0));
  }
}

void QuantoUnpackRowPair(const uint8_t* packed, size_t group, uint8_t* low, uint8_t* high) {
  for (size_t c = 0; c < group; ++c) {
    low[c] = packed[c] & 0x0F;
    if (high != nullptr) high[c] = packed[c] >> 4;
  }
}

}  // namespace modelsmith
