#include "workers/tensor/tensor_info.h"

namespace modelsmith {

std::optional<uint64_t> ElementCount(std::span<const uint64_t> shape) {
  uint64_t count = 1;
  for (uint64_t dim : shape) {
    if (__builtin_mul_overflow(count, dim, &count)) return std::nullopt;
  }
  return count;
}

std::optional<uint64_t> StorageBytes(DType dtype, std::span<const uint64_t> shape) {
  std::optional<uint64_t> count = ElementCount(shape);
  if (!count) return std::nullopt;
  uint64_t bits = 0;
  if (__builtin_mul_overflow(*count, static_cast<uint64_t>(DTypeBits(dtype)), &bits)) {
    return std::nullopt;
  }
  if (bits % 8 != 0) return std::nullopt;
  return bits / 8;
}

}  // namespace modelsmith
