#include "workers/jobs/quantize/llama_ftypes.h"

namespace modelsmith {
namespace {

// In llama-quantize's order of its usage text.
constexpr LlamaFtypeInfo kFtypes[] = {
    {"Q4_0", LlamaFtype::kQ4_0, GgmlType::kQ4_0},
    {"Q4_1", LlamaFtype::kQ4_1, GgmlType::kQ4_1},
    {"Q5_0", LlamaFtype::kQ5_0, GgmlType::kQ5_0},
    {"Q5_1", LlamaFtype::kQ5_1, GgmlType::kQ5_1},
    {"IQ2_XXS", LlamaFtype::kIQ2_XXS, GgmlType::kIQ2_XXS},
    {"IQ2_XS", LlamaFtype::kIQ2_XS, GgmlType::kIQ2_XS},
    {"IQ2_S", LlamaFtype::kIQ2_S, GgmlType::kIQ2_XS},
    {"IQ2_M", LlamaFtype::kIQ2_M, GgmlType::kIQ2_S},
    {"IQ1_S", LlamaFtype::kIQ1_S, GgmlType::kIQ1_S},
    {"IQ1_M", LlamaFtype::kIQ1_M, GgmlType::kIQ1_M},
    {"TQ1_0", LlamaFtype::kTQ1_0, GgmlType::kTQ1_0},
    {"TQ2_0", LlamaFtype::kTQ2_0, GgmlType::kTQ2_0},
    {"Q2_K", LlamaFtype::kQ2_K, GgmlType::kQ2_K},
    {"Q2_K_S", LlamaFtype::kQ2_K_S, GgmlType::kQ2_K},
    {"IQ3_XXS", LlamaFtype::kIQ3_XXS, GgmlType::kIQ3_XXS},
    {"IQ3_S", LlamaFtype::kIQ3_S, GgmlType::kIQ3_S},
    {"IQ3_M", LlamaFtype::kIQ3_M, GgmlType::kIQ3_S},
    {"Q3_K", LlamaFtype::kQ3_K_M, GgmlType::kQ3_K},
    {"IQ3_XS", LlamaFtype::kIQ3_XS, GgmlType::kIQ3_S},
    {"Q3_K_S", LlamaFtype::kQ3_K_S, GgmlType::kQ3_K},
    {"Q3_K_M", LlamaFtype::kQ3_K_M, GgmlType::kQ3_K},
    {"Q3_K_L", LlamaFtype::kQ3_K_L, GgmlType::kQ3_K},
    {"IQ4_NL", LlamaFtype::kIQ4_NL, GgmlType::kIQ4_NL},
    {"IQ4_XS", LlamaFtype::kIQ4_XS, GgmlType::kIQ4_XS},
    {"Q4_K", LlamaFtype::kQ4_K_M, GgmlType::kQ4_K},
    {"Q4_K_S", LlamaFtype::kQ4_K_S, GgmlType::kQ4_K},
    {"Q4_K_M", LlamaFtype::kQ4_K_M, GgmlType::kQ4_K},
    {"Q5_K", LlamaFtype::kQ5_K_M, GgmlType::kQ5_K},
    {"Q5_K_S", LlamaFtype::kQ5_K_S, GgmlType::kQ5_K},
    {"Q5_K_M", LlamaFtype::kQ5_K_M, GgmlType::kQ5_K},
    {"Q6_K", LlamaFtype::kQ6_K, GgmlType::kQ6_K},
    {"Q8_0", LlamaFtype::kQ8_0, GgmlType::kQ8_0},
    {"F16", LlamaFtype::kF16, GgmlType::kF16},
    {"BF16", LlamaFtype::kBF16, GgmlType::kBF16},
    {"F32", LlamaFtype::kAllF32, GgmlType::kF32},
};

}  // namespace

std::optional<LlamaFtypeInfo> LlamaFtypeByName(absl::string_view name) {
  for (const LlamaFtypeInfo& f : kFtypes) {
    if (f.name == name) return f;
  }
  return std::nullopt;
}

absl::string_view LlamaFtypeNames() {
  return "Q4_0 Q4_1 Q5_0 Q5_1 IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ1_S IQ1_M TQ1_0 TQ2_0 Q2_K Q2_K_S IQ3_XXS IQ3_S IQ3_M "
         "Q3_K IQ3_XS Q3_K_S Q3_K_M Q3_K_L IQ4_NL IQ4_XS Q4_K Q4_K_S Q4_K_M Q5_K Q5_K_S Q5_K_M Q6_K Q8_0 F16 BF16 F32";
}

}  // namespace modelsmith
