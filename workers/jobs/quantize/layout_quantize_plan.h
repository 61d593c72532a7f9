// The plan of a layout quantize job (bnb_int8, bnb_nf4, bnb_fp4, quanto_int8, quanto_int4,
// chatglm_int8, chatglm_int4): which input tensors are quantized, and the exact output tensors
// (names, dtypes, shapes, sizes) each becomes, per formats.md §5-7. Pure apart from reading the
// input's headers and config.json.
//
// What gets quantized: 2-D float tensors named "*.weight" (Linear weights), except embeddings and
// the output head (embed_tokens, wte, word_embeddings, lm_head, output_layer, ...), as these
// libraries only replace Linear layers; `exclude`, a non-empty `include` and `min_elements` narrow
// it further. A weight a scheme cannot take (ChatGLM int4 with an odd row, a quanto group that
// does not divide the row) is kept with a warning, or refused when `strict`.
//
// Outputs per quantized weight "<m>.weight", the data tensor first:
//   bnb_int8     <m>.weight I8 [out,in], <m>.SCB F32 [out], <m>.weight_format U8 []
//   bnb_nf4/fp4  <m>.weight U8 [ceil(n/2),1], .absmax F32 [blocks] (U8 codes when nested),
//                .quant_map F32 [16], nested: .nested_absmax F32, .nested_quant_map F32 [256],
//                .quant_state.bitsandbytes__nf4|fp4 U8 [json bytes]
//   quanto_int8  <m>.weight._data I8 [out,in], ._scale [out,1], <m>.input_scale [], .output_scale []
//   quanto_int4  <m>.weight._data._data U8 [ceil(G/2), g], ._scale [G,1], ._shift [G,1], input/output_scale
//   chatglm      <m>.weight I8 [out,in] (int4: [out,in/2]), <m>.weight_scale F16 [out]
// Scales, shifts and 0-d scalars take the weight's dtype.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_LAYOUT_QUANTIZE_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_LAYOUT_QUANTIZE_PLAN_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/common/pattern.h"
#include "absl/strings/string_view.h"
#include "modelsmith/v1/specs.pb.h"
#include "nlohmann/json.hpp"
#include "workers/formats/model_view.h"
#include "workers/formats/safetensors.h"
#include "workers/formats/quantized_weight_reader.h"
#include "workers/quant/bitsandbytes.h"
#include "workers/quant/half.h"

namespace modelsmith {

enum class Layout { kBnbInt8, kBnbNf4, kBnbFp4, kQuantoInt8, kQuantoInt4, kChatglmInt8, kChatglmInt4 };

inline constexpr std::pair<const char*, Layout> kLayouts[] = {
    {"bnb_int8", Layout::kBnbInt8},         {"bnb_nf4", Layout::kBnbNf4},
    {"bnb_fp4", Layout::kBnbFp4},           {"quanto_int8", Layout::kQuantoInt8},
    {"quanto_int4", Layout::kQuantoInt4},   {"chatglm_int8", Layout::kChatglmInt8},
    {"chatglm_int4", Layout::kChatglmInt4},
};

// True for bnb_int8, bnb_nf4, bnb_fp4, quanto_int8, quanto_int4, chatglm_int8, chatglm_int4.
bool IsLayoutScheme(absl::string_view scheme);
std::optional<Layout> ParseLayout(absl::string_view scheme);

std::optional<StoredFloat> StoredFloatOf(DType d);
DType DTypeOf(StoredFloat f);
// str(torch.dtype) without "torch.": "float16", "bfloat16", "float32".
const char* TorchDtypeName(StoredFloat f);

struct LayoutSpec {
  Layout layout = Layout::kBnbInt8;
  size_t bnb_block = kBnb4DefaultBlock;
  bool double_quant = false;
  size_t quanto_group = 0;  // 0: quanto's default per tensor
  std::vector<Pattern> include, exclude;
  uint64_t min_elements = 0;
  bool strict = false;
};

// The spec's layout options, checked: INVALID_ARGUMENT naming the field.
absl::StatusOr<LayoutSpec> ParseLayoutSpec(const v1::QuantizeSpec& q);

struct LayoutTensorPlan {
  const TensorInfo* source = nullptr;
  bool quantize = false;
  bool warn_not_quantizable = false;
  std::string module;  // "<m>" of "<m>.weight"
  StoredFloat stored = StoredFloat::kF32;
  uint64_t rows = 0, cols = 0;
  size_t group = 0;                       // quanto int4: elements per group
  std::vector<SafetensorsEntry> outputs;  // the data tensor first, then its companions
  // Set for a weight held in a quantized layout (requantizing): it is read back through this,
  // and `source` is its stand-in float tensor; kept, it is written as floats of its old dtype.
  const QuantizedWeightReader* reader = nullptr;
};

struct LayoutPlan {
  LayoutSpec spec;
  ModelView model;
  std::optional<nlohmann::json> config;
  std::vector<LayoutTensorPlan> tensors;
  std::vector<SafetensorsEntry> entries;  // all outputs in file order
  RequantizeInputs requantize;
};

// json.dumps of bitsandbytes' QuantState.as_dict non-tensor items, in their order.
std::string QuantStateJson(const LayoutSpec& spec, const LayoutTensorPlan& t, float nested_offset);

// The exact tensors a quantized weight `t` (module, stored, rows, cols and group set) becomes
// under `spec`, the data tensor first.
std::vector<SafetensorsEntry> PlanQuantizedOutputs(const LayoutSpec& spec, const LayoutTensorPlan& t);

// Opens the input, refuses a quantized input unless allow_requantize (OpenRequantizeInputs) and
// plans every tensor.
absl::StatusOr<LayoutPlan> MakeLayoutPlan(const v1::QuantizeSpec& q, const StorageRouter& router);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_LAYOUT_QUANTIZE_PLAN_H_
