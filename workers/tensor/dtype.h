// Element types as safetensors names them, with their storage width in bits.
// No I/O; shared by every format reader and writer.
#ifndef MODELSMITH_WORKERS_TENSOR_DTYPE_H_
#define MODELSMITH_WORKERS_TENSOR_DTYPE_H_

#include "absl/strings/string_view.h"
#include <cstdint>
#include <optional>
#include <string_view>

namespace modelsmith {

// Declared in the order of the safetensors Rust `Dtype` enum (increasing alignment), which the
// reference writer uses to order tensors: see shared/reference/formats.md §1.
enum class DType : uint8_t {
  kBool,
  kF4,
  kF6E2M3,
  kF6E3M2,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kF8E8M0,
  kF8E4M3Fnuz,
  kF8E5M2Fnuz,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kC64,
  kF64,
  kI64,
  kU64,
};

// The safetensors dtype string, e.g. "F16", "BF16", "F8_E4M3".
absl::string_view DTypeName(DType dtype);

// Parses a safetensors dtype string; nullopt for anything unknown (case-sensitive, as the
// reference reader is).
std::optional<DType> ParseDType(absl::string_view name);

// Storage width of one element in bits (4 for F4, 6 for F6_*, 8 for BOOL and 8-bit types).
uint32_t DTypeBits(DType dtype);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_TENSOR_DTYPE_H_
