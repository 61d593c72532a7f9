#include "workers/tensor/ggml_types.h"

#include <array>

namespace modelsmith {
namespace {

constexpr std::array<GgmlTypeTraits, 20> kTraits = {{
    {GgmlType::kF32, "F32", 1, 4, false},      {GgmlType::kF16, "F16", 1, 2, false},
    {GgmlType::kQ4_0, "Q4_0", 32, 18, true},   {GgmlType::kQ4_1, "Q4_1", 32, 20, true},
    {GgmlType::kQ5_0, "Q5_0", 32, 22, true},   {GgmlType::kQ5_1, "Q5_1", 32, 24, true},
    {GgmlType::kQ8_0, "Q8_0", 32, 34, true},   {GgmlType::kQ8_1, "Q8_1", 32, 36, true},
    {GgmlType::kQ2_K, "Q2_K", 256, 84, true},  {GgmlType::kQ3_K, "Q3_K", 256, 110, true},
    {GgmlType::kQ4_K, "Q4_K", 256, 144, true}, {GgmlType::kQ5_K, "Q5_K", 256, 176, true},
    {GgmlType::kQ6_K, "Q6_K", 256, 210, true}, {GgmlType::kQ8_K, "Q8_K", 256, 292, true},
    {GgmlType::kI8, "I8", 1, 1, false},        {GgmlType::kI16, "I16", 1, 2, false},
    {GgmlType::kI32, "I32", 1, 4, false},      {GgmlType::kI64, "I64", 1, 8, false},
    {GgmlType::kF64, "F64", 1, 8, false},      {GgmlType::kBF16, "BF16", 1, 2, false},
}};

}  // namespace

std::optional<GgmlTypeTraits> GgmlTraits(uint32_t type) {
  for (const GgmlTypeTraits& t : kTraits) {
    if (static_cast<uint32_t>(t.type) == type) return t;
  }
  return std::nullopt;
}

std::optional<GgmlTypeTraits> GgmlTraitsByName(absl::string_view name) {
  for (const GgmlTypeTraits& t : kTraits) {
    if (t.name == name) return t;
  }
  return std::nullopt;
}

std::optional<uint64_t> GgmlRowBytes(GgmlType type, uint64_t elements) {
  std::optional<GgmlTypeTraits> traits = GgmlTraits(static_cast<uint32_t>(type));
  if (!traits || elements % traits->block_elements != 0) return std::nullopt;
  return elements / traits->block_elements * traits->block_bytes;
}

absl::string_view GgmlTypeName(GgmlType type) {
  std::optional<GgmlTypeTraits> traits = GgmlTraits(static_cast<uint32_t>(type));
  return traits ? traits->name : absl::string_view("?");
}

}  // namespace modelsmith
