// ggml tensor types (ggml.h `enum ggml_type`) with their block geometry (ggml-common.h), as far
// as Modelsmith reads or writes them. No I/O.
#ifndef MODELSMITH_WORKERS_TENSOR_GGML_TYPES_H_
#define MODELSMITH_WORKERS_TENSOR_GGML_TYPES_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace modelsmith {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
};

struct GgmlTypeTraits {
  GgmlType type;
  absl::string_view name;   // "Q4_0"
  uint32_t block_elements;  // 1 for plain types
  uint32_t block_bytes;
  bool quantized;
};

// Traits of a known type; nullopt for a value ggml does not define or Modelsmith does not handle
// (removed and experimental types such as Q4_0_4_4 or MXFP4, refused with their number). A type
// with traits may still lack a codec: quantize_rows.h says which ones Modelsmith encodes.
std::optional<GgmlTypeTraits> GgmlTraits(uint32_t type);
std::optional<GgmlTypeTraits> GgmlTraitsByName(absl::string_view name);  // case-sensitive, "Q4_K"
// The name of a type Modelsmith handles ("Q4_K"); "?" otherwise.
absl::string_view GgmlTypeName(GgmlType type);

// Bytes of a row of `elements` elements, or nullopt when `elements` is not a whole number of
// blocks.
std::optional<uint64_t> GgmlRowBytes(GgmlType type, uint64_t elements);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_TENSOR_GGML_TYPES_H_
