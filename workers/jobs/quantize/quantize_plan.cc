#include "workers/jobs/quantize/quantize_plan.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/quant/quantize_rows.h"

namespace modelsmith {
namespace {

bool IsFloat(GgmlType t) { return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16; }

// A GGUF type a weight may be written as, by name; llama-quantize's lower-case spellings ("q8_0")
// are accepted too.
absl::StatusOr<GgmlType> WritableType(const std::string& name, const std::string& field) {
  std::optional<GgmlTypeTraits> type = GgmlTraitsByName(absl::AsciiStrToUpper(name));
  if (!type || !(type->quantized || IsFloat(type->type)) || type->type == GgmlType::kQ8_1 ||
      type->type == GgmlType::kQ8_K) {
    return FieldError("INVALID_TYPE", field, absl::StrCat("'", name, "' is not a GGUF type Modelsmith writes"));
  }
  return type->type;
}

}  // namespace

absl::StatusOr<GgmlType> SourceGgmlType(const TensorInfo& tensor) {
  if (tensor.ggml_type) return static_cast<GgmlType>(*tensor.ggml_type);
  switch (tensor.dtype) {
    case DType::kF32: return GgmlType::kF32;
    case DType::kF16: return GgmlType::kF16;
    case DType::kBF16: return GgmlType::kBF16;
    case DType::kI8: return GgmlType::kI8;
    case DType::kI16: return GgmlType::kI16;
    case DType::kI32: return GgmlType::kI32;
    case DType::kI64: return GgmlType::kI64;
    case DType::kF64: return GgmlType::kF64;
    default:
      return MakeError(
          absl::StatusCode::kInvalidArgument, "UNSUPPORTED_DTYPE",
          absl::StrCat("tensor '", tensor.name, "' is ", DTypeName(tensor.dtype), ", which GGUF cannot hold"),
          {{"tensor", tensor.name}});
  }
}

absl::StatusOr<QuantizePlanner> QuantizePlanner::Create(const v1::QuantizeSpec& spec) {
  QuantizePlanner planner;
  if (spec.scheme().empty()) return FieldError("MISSING_FIELD", "quantize.scheme", "'quantize.scheme' is required");
  std::optional<LlamaFtypeInfo> ftype = LlamaFtypeByName(spec.scheme());
  if (!ftype) {
    return FieldError("INVALID_SCHEME", "quantize.scheme",
                      absl::StrCat("unknown scheme '", spec.scheme(), "' (llama-quantize ftypes: ", LlamaFtypeNames(),
                                   "; layouts: bnb_int8 bnb_nf4 bnb_fp4 quanto_int8 quanto_int4 chatglm_int8 "
                                   "chatglm_int4)"));
  }
  planner.ftype_ = *ftype;
  planner.pure_ = spec.pure();
  planner.leave_output_tensor_ = spec.leave_output_tensor();
  if (!spec.output_tensor_type().empty()) {
    absl::StatusOr<GgmlType> type = WritableType(spec.output_tensor_type(), "quantize.output_tensor_type");
    if (!type.ok()) return type.status();
    planner.output_tensor_type_ = *type;
  }
  if (!spec.token_embedding_type().empty()) {
    absl::StatusOr<GgmlType> type = WritableType(spec.token_embedding_type(), "quantize.token_embedding_type");
    if (!type.ok()) return type.status();
    planner.token_embedding_type_ = *type;
  }
  for (int i = 0; i < spec.tensor_types_size(); ++i) {
    const auto& rule = spec.tensor_types(i);
    const std::string field = absl::StrCat("quantize.tensor_types[", i, "]");
    absl::StatusOr<Pattern> pattern = Pattern::Compile(rule.pattern(), field);
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<GgmlType> type = WritableType(rule.type(), field);
    if (!type.ok()) return type.status();
    planner.overrides_.push_back({*std::move(pattern), *type});
  }
  for (int i = 0; i < spec.include_size(); ++i) {
    absl::StatusOr<Pattern> r = Pattern::Compile(spec.include(i), absl::StrCat("quantize.include[", i, "]"));
    if (!r.ok()) return r.status();
    planner.include_.push_back(*std::move(r));
  }
  for (int i = 0; i < spec.exclude_size(); ++i) {
    absl::StatusOr<Pattern> r = Pattern::Compile(spec.exclude(i), absl::StrCat("quantize.exclude[", i, "]"));
    if (!r.ok()) return r.status();
    planner.exclude_.push_back(*std::move(r));
  }
  planner.min_elements_ = spec.min_elements();
  planner.strict_ = spec.strict();
  return planner;
}

absl::StatusOr<TensorPlan> QuantizePlanner::Plan(const TensorInfo& tensor) const {
  absl::StatusOr<GgmlType> source = SourceGgmlType(tensor);
  if (!source.ok()) return source.status();
  if (tensor.shape.size() > 4) {
    return MakeError(
        absl::StatusCode::kInvalidArgument, "TOO_MANY_DIMS",
        absl::StrCat("tensor '", tensor.name, "' has ", tensor.shape.size(), " dimensions; GGUF holds at most 4"),
        {{"tensor", tensor.name}});
  }
  TensorPlan plan{*source, *source};
  const bool floating = IsFloat(*source) || GgmlTraits(static_cast<uint32_t>(*source))->quantized;
  const bool llama_quantizes = LlamaQuantizesTensor(tensor, leave_output_tensor_);
  bool decided = false;
  for (const Override& o : overrides_) {
    if (o.pattern.FullMatch(tensor.name)) {
      plan.target_type = o.type;
      decided = true;
      break;
    }
  }
  if (!decided && floating) {
    const uint64_t elements = ElementCount(tensor.shape).value_or(0);
    if (tensor.shape.size() <= 1) {
      plan.target_type = GgmlType::kF32;
    } else if (AnyFullMatch(exclude_, tensor.name) || (!include_.empty() && !AnyFullMatch(include_, tensor.name)) ||
               elements < min_elements_ || !llama_quantizes) {
      plan.target_type = IsFloat(*source) ? *source : GgmlType::kF32;
    } else {
      auto chosen = chosen_types_.find(tensor.name);
      plan.target_type = chosen != chosen_types_.end() ? chosen->second : ftype_.base;
    }
  }
  if (floating && llama_quantizes) {
    if (token_embedding_type_ && tensor.name == "token_embd.weight") plan.target_type = *token_embedding_type_;
    if (output_tensor_type_ && tensor.name == "output.weight") plan.target_type = *output_tensor_type_;
  }
  if (!floating && plan.target_type != *source) {
    return MakeError(
        absl::StatusCode::kInvalidArgument, "NOT_A_FLOAT_TENSOR",
        absl::StrCat("tensor '", tensor.name, "' holds integers and cannot become ", GgmlTypeName(plan.target_type)),
        {{"tensor", tensor.name}});
  }
  if (plan.target_type != *source && !CanEncode(plan.target_type)) {
    return MakeError(absl::StatusCode::kUnimplemented, "TYPE_NOT_IMPLEMENTED",
                     absl::StrCat("tensor '", tensor.name, "' should become ", GgmlTypeName(plan.target_type),
                                  ", which Modelsmith does not write yet"),
                     {{"tensor", tensor.name}, {"type", std::string(GgmlTypeName(plan.target_type))}});
  }
  const uint64_t row = tensor.shape.empty() ? 1 : tensor.shape.back();
  if (!GgmlRowBytes(plan.target_type, row)) {
    if (strict_) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "TENSOR_NOT_QUANTIZABLE",
                       absl::StrCat("tensor '", tensor.name, "': rows of ", row, " elements are not whole ",
                                    GgmlTypeName(plan.target_type), " blocks"),
                       {{"tensor", tensor.name}});
    }
    plan.target_type = IsFloat(*source) ? *source : GgmlType::kF32;
    plan.warn_not_quantizable = true;
  }
  return plan;
}

void QuantizePlanner::PrepareForModel(const std::vector<const TensorInfo*>& tensors, const ModelFacts& facts) {
  chosen_types_.clear();
  const bool quantized_base = GgmlTraits(static_cast<uint32_t>(ftype_.base))->quantized;
  if (pure_ || !quantized_base) return;  // every quantized weight takes the base type
  LlamaTensorTypes rules(ftype_, facts, tensors, output_tensor_type_, token_embedding_type_);
  for (const TensorInfo* t : tensors) {
    if (!LlamaQuantizesTensor(*t, leave_output_tensor_)) continue;
    chosen_types_[t->name] = rules.Next(*t).type;
  }
}

uint32_t LlamaFileType(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return 0;
    case GgmlType::kF16: return 1;
    case GgmlType::kQ4_0: return 2;
    case GgmlType::kQ4_1: return 3;
    case GgmlType::kQ8_0: return 7;
    case GgmlType::kQ5_0: return 8;
    case GgmlType::kQ5_1: return 9;
    case GgmlType::kQ2_K: return 10;
    case GgmlType::kQ3_K: return 12;
    case GgmlType::kQ4_K: return 15;
    case GgmlType::kQ5_K: return 17;
    case GgmlType::kQ6_K: return 18;
    case GgmlType::kBF16: return 32;
    default: return 0;
  }
}

}  // namespace modelsmith
