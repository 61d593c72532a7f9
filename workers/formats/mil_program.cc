#include "workers/formats/mil_program.h"

#include <algorithm>
#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

absl::Status ProgramError(const std::string& op, absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, "MIL_PROGRAM_INVALID",
                   op.empty() ? std::string(message) : absl::StrCat("op '", op, "': ", message), {{"op", op}});
}

std::string OpName(const coreml::Operation& op) {
  auto name = op.attributes().find("name");
  if (name != op.attributes().end() && name->second.has_immediate_value() &&
      name->second.immediate_value().tensor().strings().values_size() > 0)
    return name->second.immediate_value().tensor().strings().values(0);
  return op.outputs_size() > 0 ? op.outputs(0).name() : op.type();
}

// Every blob reference of `op` and of the ops of its nested blocks.
void CollectBlobs(const coreml::Operation& op, std::vector<MilBlobRef>* blobs) {
  auto add = [&](const coreml::Value& value, const std::string& param) {
    if (value.has_blob_file_value())
      blobs->push_back({value.blob_file_value().file_name(),
                        value.blob_file_value().offset(),
                        {},
                        param,
                        value.type().tensor_type().data_type()});
  };
  for (const auto& [key, value] : op.attributes()) add(value, key);
  for (const auto& [param, argument] : op.inputs()) {
    for (const auto& binding : argument.arguments()) {
      if (binding.has_value()) add(binding.value(), param);
    }
  }
  for (const coreml::Block& block : op.blocks()) {
    for (const coreml::Operation& inner : block.operations()) CollectBlobs(inner, blobs);
  }
  std::sort(blobs->begin(), blobs->end(), [](const MilBlobRef& a, const MilBlobRef& b) {
    return std::tie(a.file_name, a.record_offset, a.param) < std::tie(b.file_name, b.record_offset, b.param);
  });
}

// The values `op` reads from outside it: its input bindings and those of its nested blocks'
// ops, less what the nested blocks define themselves.
void CollectReads(const coreml::Operation& op, std::set<std::string>* reads) {
  for (const auto& [param, argument] : op.inputs()) {
    for (const auto& binding : argument.arguments()) {
      if (binding.binding_case() == coreml::Argument::Binding::kName) reads->insert(binding.name());
    }
  }
  for (const coreml::Block& block : op.blocks()) {
    std::set<std::string> defined, inner_reads;
    for (const auto& input : block.inputs()) defined.insert(input.name());
    for (const coreml::Operation& inner : block.operations()) {
      std::set<std::string> these;
      CollectReads(inner, &these);
      for (const std::string& v : these) {
        if (!defined.count(v)) inner_reads.insert(v);
      }
      for (const auto& out : inner.outputs()) defined.insert(out.name());
    }
    for (const std::string& out : block.outputs()) {
      if (!defined.count(out)) inner_reads.insert(out);
    }
    reads->insert(inner_reads.begin(), inner_reads.end());
  }
}

}  // namespace

std::optional<uint64_t> MilElementCount(const coreml::ValueType& type) {
  if (!type.has_tensor_type()) return std::nullopt;
  uint64_t count = 1;
  for (const auto& dim : type.tensor_type().dimensions()) {
    if (!dim.has_constant()) return std::nullopt;
    count *= dim.constant().size();
  }
  return count;
}

double MilDataTypeBytes(int data_type) {
  switch (data_type) {
    case coreml::BOOL:
    case coreml::INT8:
    case coreml::UINT8:
    case coreml::FLOAT8E4M3FN:
    case coreml::FLOAT8E5M2: return 1;
    case coreml::FLOAT16:
    case coreml::BFLOAT16:
    case coreml::INT16:
    case coreml::UINT16: return 2;
    case coreml::FLOAT32:
    case coreml::INT32:
    case coreml::UINT32: return 4;
    case coreml::FLOAT64:
    case coreml::INT64:
    case coreml::UINT64: return 8;
    case coreml::INT4:
    case coreml::UINT4: return 0.5;
    case coreml::UINT1: return 0.125;
    case coreml::UINT2: return 0.25;
    case coreml::UINT3: return 0.375;
    case coreml::UINT6: return 0.75;
    default: return 0;
  }
}

std::string MilDataTypeName(int data_type) {
  switch (data_type) {
    case coreml::BOOL: return "bool";
    case coreml::STRING: return "string";
    case coreml::FLOAT16: return "fp16";
    case coreml::FLOAT32: return "fp32";
    case coreml::FLOAT64: return "fp64";
    case coreml::BFLOAT16: return "bf16";
    case coreml::INT8: return "int8";
    case coreml::INT16: return "int16";
    case coreml::INT32: return "int32";
    case coreml::INT64: return "int64";
    case coreml::INT4: return "int4";
    case coreml::UINT8: return "uint8";
    case coreml::UINT16: return "uint16";
    case coreml::UINT32: return "uint32";
    case coreml::UINT64: return "uint64";
    case coreml::UINT4: return "uint4";
    case coreml::UINT2: return "uint2";
    case coreml::UINT1: return "uint1";
    case coreml::UINT6: return "uint6";
    case coreml::UINT3: return "uint3";
    case coreml::FLOAT8E4M3FN: return "fp8e4m3";
    case coreml::FLOAT8E5M2: return "fp8e5m2";
    default: return absl::StrCat("dtype", data_type);
  }
}

std::string MilShapeString(const coreml::ValueType& type) {
  if (!type.has_tensor_type()) return "?";
  std::vector<std::string> dims;
  for (const auto& dim : type.tensor_type().dimensions())
    dims.push_back(dim.has_constant() ? absl::StrCat(dim.constant().size()) : "?");
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

absl::StatusOr<MilProgramIndex> IndexMilProgram(CoreMlPackage& package) {
  MilProgramIndex index;
  const coreml::Program& program = package.model().ml_program();
  auto main = program.functions().find("main");
  if (main == program.functions().end())
    return ProgramError("", absl::StrCat("the program of '", package.model_uri(), "' has no function 'main'"));
  const coreml::Function& function = main->second;
  index.opset = function.opset();
  auto block = function.block_specializations().find(function.opset());
  if (block == function.block_specializations().end()) {
    if (function.block_specializations_size() != 1)
      return ProgramError("", absl::StrCat("function 'main' has no block for its opset '", function.opset(), "'"));
    block = function.block_specializations().begin();
    index.opset = block->first;
  }
  index.block = &block->second;
  std::set<std::string> defined_anywhere;
  for (const coreml::Operation& op : index.block->operations()) {
    for (const auto& out : op.outputs()) defined_anywhere.insert(out.name());
  }
  for (const auto& input : function.inputs()) {
    index.function_inputs.insert(input.name());
    index.function_input_order.push_back(input.name());
    index.types[input.name()] = &input.type();
  }
  for (int i = 0; i < index.block->operations_size(); ++i) {
    const coreml::Operation& op = index.block->operations(i);
    MilOpInfo info;
    info.name = OpName(op);
    info.type = op.type();
    info.kind = op.type() == "const"                        ? MilOpKind::kConst
                : absl::StartsWith(op.type(), "constexpr_") ? MilOpKind::kConstexpr
                                                            : MilOpKind::kCompute;
    std::set<std::string> reads;
    CollectReads(op, &reads);
    for (const std::string& value : reads) {
      if (!index.producer.count(value) && !index.function_inputs.count(value)) {
        return ProgramError(info.name, defined_anywhere.count(value)
                                           ? absl::StrCat("reads '", value,
                                                          "', which only a later op defines (ops out of order, or a "
                                                          "cycle)")
                                           : absl::StrCat("reads '", value, "', which no op and no input defines"));
      }
      if (info.kind != MilOpKind::kCompute) {
        const MilOpKind from =
            index.producer.count(value) ? index.ops[index.producer[value]].kind : MilOpKind::kCompute;
        if (from == MilOpKind::kCompute)
          return ProgramError(info.name,
                              absl::StrCat("a ", op.type(), " op reads '", value, "', which is not a constant"));
      }
    }
    info.reads.assign(reads.begin(), reads.end());
    for (const auto& output : op.outputs()) {
      if (output.name().empty() || index.producer.count(output.name()) || index.function_inputs.count(output.name()))
        return ProgramError(info.name, absl::StrCat("defines '", output.name(), "' again (or an empty name)"));
      index.producer[output.name()] = i;
      index.types[output.name()] = &output.type();
      info.outputs.push_back(output.name());
    }
    if (info.outputs.empty()) return ProgramError(info.name, "has no outputs");
    CollectBlobs(op, &info.blobs);
    for (MilBlobRef& ref : info.blobs) {
      const std::string who = absl::StrCat("op '", info.name, "' parameter '", ref.param, "'");
      absl::StatusOr<const CoreMlWeightFile*> file = package.WeightFile(ref.file_name, who);
      if (!file.ok()) return file.status();
      absl::StatusOr<MilBlob> blob = (*file)->blobs.BlobAt(ref.record_offset, who);
      if (!blob.ok()) return blob.status();
      ref.blob = *blob;
      if (ref.declared_type != MilDataTypeOfBlob(blob->dtype)) {
        return ProgramError(
            info.name, absl::StrCat("parameter '", ref.param, "' is declared ", MilDataTypeName(ref.declared_type),
                                    " but its blob at offset ", ref.record_offset, " of '", ref.file_name, "' holds ",
                                    MilBlobDtypeName(blob->dtype)));
      }
    }
    if (info.kind == MilOpKind::kCompute) {
      info.position = static_cast<int>(index.compute_ops.size());
      index.compute_ops.push_back(i);
    }
    index.ops.push_back(std::move(info));
  }
  for (const std::string& out : index.block->outputs()) {
    if (!index.producer.count(out) && !index.function_inputs.count(out))
      return ProgramError("", absl::StrCat("block output '", out, "' is not defined"));
  }

  // Weights: the constant ops compute ops (or the block outputs) read, at their first reader.
  auto weight_of = [&](size_t op) -> MilWeight& {
    auto [it, added] = index.weight_of_op.try_emplace(op, index.weights.size());
    if (added) {
      MilWeight weight;
      weight.op = op;
      std::set<size_t> seen;
      std::function<void(size_t)> visit = [&](size_t o) {
        if (!seen.insert(o).second) return;
        for (const std::string& v : index.ops[o].reads) {
          auto p = index.producer.find(v);
          if (p != index.producer.end()) visit(p->second);
        }
      };
      visit(op);
      weight.sources.assign(seen.begin(), seen.end());
      std::set<std::string> kinds;
      std::vector<std::string> chain;
      for (size_t s : weight.sources) {
        for (const MilBlobRef& ref : index.ops[s].blobs) weight.stored_bytes += ref.blob.size_bytes;
        if (index.ops[s].kind == MilOpKind::kConstexpr && kinds.insert(index.ops[s].type).second)
          chain.push_back(index.ops[s].type);
      }
      weight.compression = chain.empty() ? "none" : absl::StrJoin(chain, "+");
      const coreml::ValueType& type = *index.types.at(index.ops[op].outputs.front());
      if (std::optional<uint64_t> elements = MilElementCount(type))
        weight.dense_bytes = static_cast<uint64_t>(*elements * MilDataTypeBytes(type.tensor_type().data_type()) + 0.5);
      index.weights.push_back(std::move(weight));
    }
    return index.weights[it->second];
  };
  for (size_t position = 0; position < index.compute_ops.size(); ++position) {
    for (const std::string& v : index.ops[index.compute_ops[position]].reads) {
      auto p = index.producer.find(v);
      if (p == index.producer.end() || index.ops[p->second].kind == MilOpKind::kCompute) continue;
      MilWeight& weight = weight_of(p->second);
      if (weight.first_position < 0) weight.first_position = static_cast<int>(position);
    }
  }
  for (const std::string& out : index.block->outputs()) {
    auto p = index.producer.find(out);
    if (p != index.producer.end() && index.ops[p->second].kind != MilOpKind::kCompute) weight_of(p->second);
  }
  std::sort(index.weights.begin(), index.weights.end(),
            [](const MilWeight& a, const MilWeight& b) { return a.op < b.op; });
  index.weight_of_op.clear();
  for (size_t w = 0; w < index.weights.size(); ++w) index.weight_of_op[index.weights[w].op] = w;
  return index;
}

absl::Status VerifyMilProgram(const coreml::Model& model,
                              const std::map<std::string, std::map<uint64_t, MilBlob>>& weight_files) {
  auto fail = [](absl::string_view what) {
    return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH", absl::StrCat("written chunk: ", what));
  };
  auto main = model.ml_program().functions().find("main");
  if (!model.has_ml_program() || main == model.ml_program().functions().end() ||
      main->second.block_specializations_size() != 1)
    return fail("no main function with one block");
  const coreml::Function& function = main->second;
  const coreml::Block& block = function.block_specializations().begin()->second;
  std::set<std::string> defined;
  if (model.description().input_size() != function.inputs_size())
    return fail("the description's inputs differ from the function's");
  for (int i = 0; i < function.inputs_size(); ++i) {
    if (model.description().input(i).name() != function.inputs(i).name())
      return fail(absl::StrCat("input ", i, " is '", function.inputs(i).name(), "' but described as '",
                               model.description().input(i).name(), "'"));
    defined.insert(function.inputs(i).name());
  }
  for (const coreml::Operation& op : block.operations()) {
    std::set<std::string> reads;
    CollectReads(op, &reads);
    for (const std::string& v : reads) {
      if (!defined.count(v)) return fail(absl::StrCat("op '", OpName(op), "' reads '", v, "' before it is defined"));
    }
    for (const auto& out : op.outputs()) {
      if (!defined.insert(out.name()).second) return fail(absl::StrCat("'", out.name(), "' is defined twice"));
    }
    std::vector<MilBlobRef> blobs;
    CollectBlobs(op, &blobs);
    for (const MilBlobRef& ref : blobs) {
      auto file = weight_files.find(std::string(ref.file_name.substr(ref.file_name.rfind('/') + 1)));
      const MilBlob* blob = nullptr;
      if (file != weight_files.end()) {
        auto at = file->second.find(ref.record_offset);
        if (at != file->second.end()) blob = &at->second;
      }
      if (blob == nullptr)
        return fail(absl::StrCat("op '", OpName(op), "' refers to offset ", ref.record_offset, " of '", ref.file_name,
                                 "', where no blob record is"));
      if (MilDataTypeOfBlob(blob->dtype) != ref.declared_type)
        return fail(absl::StrCat("op '", OpName(op), "' parameter '", ref.param, "' has a blob of another dtype"));
    }
  }
  if (model.description().output_size() != block.outputs_size())
    return fail("the description's outputs differ from the block's");
  for (int i = 0; i < block.outputs_size(); ++i) {
    if (!defined.count(block.outputs(i))) return fail(absl::StrCat("output '", block.outputs(i), "' is not defined"));
    if (model.description().output(i).name() != block.outputs(i))
      return fail(absl::StrCat("output ", i, " is '", block.outputs(i), "' but described as '",
                               model.description().output(i).name(), "'"));
  }
  return absl::OkStatus();
}

}  // namespace modelsmith
