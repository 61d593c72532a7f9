// llama-quantize's ftype presets (llama.h `enum llama_ftype`, src/llama-quant.cpp): each name's
// general.file_type number and the base type every weight gets before llama.cpp's per-tensor
// rules (llama_tensor_types.h). No I/O.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_LLAMA_FTYPES_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_LLAMA_FTYPES_H_

#include <cstdint>
#include <optional>

#include "absl/strings/string_view.h"
#include "workers/tensor/ggml_types.h"

namespace modelsmith {

enum class LlamaFtype : uint32_t {
  kAllF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 7,
  kQ5_0 = 8,
  kQ5_1 = 9,
  kQ2_K = 10,
  kQ3_K_S = 11,
  kQ3_K_M = 12,
  kQ3_K_L = 13,
  kQ4_K_S = 14,
  kQ4_K_M = 15,
  kQ5_K_S = 16,
  kQ5_K_M = 17,
  kQ6_K = 18,
  kIQ2_XXS = 19,
  kIQ2_XS = 20,
  kQ2_K_S = 21,
  kIQ3_XS = 22,
  kIQ3_XXS = 23,
  kIQ1_S = 24,
  kIQ4_NL = 25,
  kIQ3_S = 26,
  kIQ3_M = 27,
  kIQ2_S = 28,
  kIQ2_M = 29,
  kIQ4_XS = 30,
  kIQ1_M = 31,
  kBF16 = 32,
  kTQ1_0 = 36,
  kTQ2_0 = 37,
};

struct LlamaFtypeInfo {
  absl::string_view name;  // llama-quantize's name: "Q4_K_M"
  LlamaFtype ftype;
  GgmlType base;  // llama-quantize's default_type
};

// The preset a scheme name means, with llama-quantize's aliases (Q3_K is Q3_K_M, Q4_K is Q4_K_M,
// Q5_K is Q5_K_M); nullopt for any other name. Case-sensitive.
std::optional<LlamaFtypeInfo> LlamaFtypeByName(absl::string_view name);

// Every name LlamaFtypeByName accepts, space-separated, for error messages.
absl::string_view LlamaFtypeNames();

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_LLAMA_FTYPES_H_
