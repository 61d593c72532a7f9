// Which tensors of a checkpoint are already quantized, and in which layout: the key patterns of
// formats.md §5-7 and §10, read from names, dtypes and shapes only.
//
//   bitsandbytes 4-bit  <m>.weight.quant_state.bitsandbytes__nf4|__fp4 (+ weight, weight.absmax,
//                       weight.quant_map, weight.nested_absmax, weight.nested_quant_map)
//   bitsandbytes int8   <m>.SCB (+ <m>.weight int8, <m>.weight_format)
//   optimum-quanto      <m>.weight._scale with <m>.weight._data (int8 or fp8) or
//                       <m>.weight._data._data (packed; + weight._shift); <m>.input_scale and
//                       <m>.output_scale belong to the group. qint4 vs qint2 from the packed rows.
//   ChatGLM             <m>.weight_scale with an int8 <m>.weight; int4 vs int8 from config.json's
//                       quantization_bit when known, else from the scale/weight shapes is
//                       impossible, so the layout is "chatglm" with bits unknown.
//   fp8                 any other F8_E4M3 / F8_E5M2 tensor
//   GGUF                every tensor of a quantized ggml type (its type name is the layout)
// A group is named by its module path <m>; every tensor of a group is listed.
#ifndef MODELSMITH_WORKERS_FORMATS_QUANTIZED_LAYOUT_H_
#define MODELSMITH_WORKERS_FORMATS_QUANTIZED_LAYOUT_H_

#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

struct QuantizedGroup {
  std::string module;  // "<m>", or the tensor name for fp8 and GGUF tensors
  // "bnb_int8", "bnb_nf4", "bnb_fp4", "quanto_qint8", "quanto_qfloat8", "quanto_qint4",
  // "quanto_qint2", "chatglm_int8", "chatglm_int4", "chatglm", "fp8_e4m3", "fp8_e5m2", or a GGUF
  // type name ("Q4_0", ...).
  std::string layout;
  std::vector<std::string> tensors;  // every tensor of the group, the main weight first
};

// config.json's "quantization_bit" when it is 4 or 8 (ChatGLM checkpoints quantized at save).
std::optional<int> ChatglmBitsFromConfig(const std::optional<nlohmann::json>& config);

// `chatglm_bits` is config.json's quantization_bit when the caller found one (4 or 8).
std::vector<QuantizedGroup> DetectQuantizedLayouts(const std::vector<TensorInfo>& tensors,
                                                   std::optional<int> chatglm_bits = std::nullopt);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_QUANTIZED_LAYOUT_H_
