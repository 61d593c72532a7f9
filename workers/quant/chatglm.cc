#include "workers/quant/chatglm.h"

#include <algorithm>
#include <cmath>

#include "workers/quant/half.h"

namespace modelsmith {

uint16_t ChatglmQuantizeRow(int bits, const float* w, size_t n, int8_t* out) {
  const float max_code = bits == 4 ? 7.0f : 127.0f;
  float absmax = 0;
  for (size_t i = 0; i < n; ++i) absmax = std::max(absmax, std::fabs(RoundTo(StoredFloat::kF16, w[i])));
  const uint16_t scale_bits = Fp32ToFp16(absmax / max_code);
  const float scale = Fp16ToFp32(scale_bits);
  auto code = [&](size_t i) -> int {
    const float v = RoundTo(StoredFloat::kF16, RoundTo(StoredFloat::kF16, w[i]) / scale);
    return std::isnan(v) ? 0 : static_cast<int>(std::clamp(std::nearbyint(v), -max_code - 1, max_code));
  };
  if (bits == 8) {
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<int8_t>(code(i));
  } else {
    for (size_t i = 0; i + 1 < n; i += 2) {
      out[i / 2] = static_cast<int8_t>(static_cast<uint8_t>((code(i) & 0x0F) << 4 | (code(i + 1) & 0x0F)));
    }
  }
  return scale_bits;
}

void ChatglmDequantizeRow(int bits, const int8_t* in, size_t n, uint16_t scale_fp16, float* y) {
  const float scale = Fp16ToFp32(scale_fp16);
  for (size_t i = 0; i < n; ++i) {
    int q;
    if (bits == 8) {
      q = in[i];
    } else {
      const int8_t byte = in[i / 2];
      q = i % 2 == 0 ? byte >> 4 : static_cast<int8_t>(static_cast<uint8_t>(byte) << 4) >> 4;
    }
    y[i] = RoundTo(StoredFloat::kF16, static_cast<float>(q) * scale);
  }
}

}  // namespace modelsmith
