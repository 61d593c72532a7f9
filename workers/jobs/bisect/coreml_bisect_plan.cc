#include "workers/jobs/bisect/coreml_bisect_plan.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/jobs/bisect/onnx_bisect_plan.h"

namespace modelsmith {
namespace {

constexpr char kFp32Suffix[] = "_fp32";

// coremltools' numpy bytes of a parameter value: elements times the numpy item size (sub-byte
// types are read one byte per element); 0 for a scalar, which it does not count.
uint64_t NumpyBytes(const coreml::Value& value) {
  const coreml::ValueType& type = value.type();
  if (!type.has_tensor_type() || type.tensor_type().dimensions_size() == 0) return 0;
  const std::optional<uint64_t> n = MilElementCount(type);
  const double bytes = MilDataTypeBytes(type.tensor_type().data_type());
  return n ? *n * static_cast<uint64_t>(std::max(1.0, bytes)) : 0;
}

// The program-order split coremltools' bisect_model makes (see the header).
void ProgramOrderSplit(const MilProgramIndex& index, CoreMlBisectPlan* plan) {
  std::vector<uint64_t> op_bytes(index.ops.size(), 0);
  std::map<std::string, int> readers;  // value -> number of ops reading it
  uint64_t total = 0;
  for (size_t i = 0; i < index.ops.size(); ++i) {
    const coreml::Operation& op = index.block->operations(static_cast<int>(i));
    for (const std::string& v : index.ops[i].reads) ++readers[v];
    if (index.ops[i].kind == MilOpKind::kCompute) continue;
    if (index.ops[i].kind == MilOpKind::kConst) {
      auto val = op.attributes().find("val");
      if (val != op.attributes().end()) op_bytes[i] = NumpyBytes(val->second);
    } else {  // each parameter of a constexpr op becomes a const of its own
      for (const auto& [key, value] : op.attributes()) {
        if (key != "name") op_bytes[i] += NumpyBytes(value);
      }
      for (const auto& [param, argument] : op.inputs()) {
        for (const auto& b : argument.arguments()) {
          if (b.has_value()) op_bytes[i] += NumpyBytes(b.value());
        }
      }
    }
    total += op_bytes[i];
  }
  uint64_t running = 0;
  for (size_t i = 0; i < index.ops.size(); ++i) {
    running += op_bytes[i];
    const MilOpInfo& op = index.ops[i];
    if (op.kind == MilOpKind::kCompute && 2 * running >= total && op.outputs.size() == 1 &&
        readers[op.outputs[0]] == 1) {
      plan->program_order_first = running;
      plan->program_order_second = total - running;
      return;
    }
  }
}

bool IsFp16(const coreml::ValueType* type) {
  return type != nullptr && type->has_tensor_type() && type->tensor_type().data_type() == coreml::FLOAT16;
}

coreml::Value StringValue(const std::string& s) {
  coreml::Value value;
  value.mutable_type()->mutable_tensor_type()->set_data_type(coreml::STRING);
  value.mutable_immediate_value()->mutable_tensor()->mutable_strings()->add_values(s);
  return value;
}

// cast(x = from, dtype = "fp16"/"fp32") -> `to`, typed as `type` with `to_type`.
coreml::Operation CastOp(const std::string& from, const std::string& to, const coreml::ValueType& type,
                         coreml::DataType to_type) {
  coreml::Operation op;
  op.set_type("cast");
  (*op.mutable_inputs())["x"].add_arguments()->set_name(from);
  *(*op.mutable_inputs())["dtype"].add_arguments()->mutable_value() =
      StringValue(to_type == coreml::FLOAT32 ? "fp32" : "fp16");
  coreml::NamedValueType* out = op.add_outputs();
  out->set_name(to);
  *out->mutable_type() = type;
  out->mutable_type()->mutable_tensor_type()->set_data_type(to_type);
  (*op.mutable_attributes())["name"] = StringValue(to);
  return op;
}

// A multi-array feature for a crossing value.
absl::StatusOr<coreml::FeatureDescription> Feature(const std::string& name, const coreml::ValueType& type) {
  static const std::map<int, int> kArrayType = {
      {coreml::FLOAT16, 65552}, {coreml::FLOAT32, 65568}, {coreml::FLOAT64, 65600}, {coreml::INT32, 131104}};
  coreml::FeatureDescription feature;
  feature.set_name(name);
  auto array_type = kArrayType.find(type.tensor_type().data_type());
  if (!MilElementCount(type) || array_type == kArrayType.end()) {
    return MakeError(
        absl::StatusCode::kFailedPrecondition, "COREML_BOUNDARY_UNSUPPORTED",
        absl::StrCat("value '", name, "' (", MilDataTypeName(type.tensor_type().data_type()), " ", MilShapeString(type),
                     ") would cross between chunks, but a model input must be a "
                     "float16/float32/float64/int32 tensor of known shape"),
        {{"value", name}});
  }
  coreml::ArrayFeatureType* array = feature.mutable_type()->mutable_multi_array_type();
  for (const auto& d : type.tensor_type().dimensions()) array->add_shape(static_cast<int64_t>(d.constant().size()));
  array->set_data_type(array_type->second);
  return feature;
}

}  // namespace

absl::StatusOr<CoreMlBisectPlan> PlanCoreMlBisect(const MilProgramIndex& index, size_t chunks) {
  const size_t positions = index.compute_ops.size();
  if (chunks > positions) {
    return MakeError(absl::StatusCode::kInvalidArgument, "BISECT_TOO_MANY_CHUNKS",
                     absl::StrCat("'bisect.chunks' is ", chunks, " but the program has only ", positions,
                                  " compute op(s) to cut between"),
                     {{"field", "bisect.chunks"}});
  }
  CoreMlBisectPlan plan;
  plan.position_bytes.assign(positions, 0);
  // Each constant op's blobs weigh at the first position whose weight chain includes it.
  std::map<size_t, int> first_use;  // constant op -> position
  for (const MilWeight& weight : index.weights) {
    const int at = weight.first_position >= 0 ? weight.first_position : static_cast<int>(positions) - 1;
    for (size_t s : weight.sources) {
      auto [it, added] = first_use.try_emplace(s, at);
      if (!added) it->second = std::min(it->second, at);
    }
  }
  for (const auto& [op, at] : first_use) {
    for (const MilBlobRef& ref : index.ops[op].blobs) plan.position_bytes[at] += ref.blob.size_bytes;
  }
  for (uint64_t b : plan.position_bytes) plan.total_bytes += b;

  // Crossings: a compute value crosses every cut between its producer and its last compute reader.
  std::vector<int64_t> delta(positions + 1, 0);
  std::map<std::string, int> last_reader;
  for (size_t p = 0; p < positions; ++p) {
    for (const std::string& v : index.ops[index.compute_ops[p]].reads) last_reader[v] = static_cast<int>(p);
  }
  for (const auto& [value, last] : last_reader) {
    auto producer = index.producer.find(value);
    if (producer == index.producer.end() || index.ops[producer->second].kind != MilOpKind::kCompute) continue;
    const int from = index.ops[producer->second].position;
    if (last > from) ++delta[from], --delta[last];
  }
  int64_t running = 0;
  for (size_t p = 0; p < positions; ++p) plan.crossings.push_back(static_cast<uint32_t>(running += delta[p]));

  const std::vector<size_t> ends = ChooseOnnxCuts(plan.position_bytes, plan.crossings, chunks);
  std::vector<int> chunk_of_position(positions);
  for (size_t k = 0, begin = 0; k < ends.size(); begin = ends[k++]) {
    for (size_t p = begin; p < ends[k]; ++p) chunk_of_position[p] = static_cast<int>(k);
  }
  auto chunk_of_value = [&](const std::string& v) {
    auto producer = index.producer.find(v);
    if (producer == index.producer.end() || index.ops[producer->second].kind != MilOpKind::kCompute) return -1;
    return chunk_of_position[index.ops[producer->second].position];
  };
  // Values each chunk's compute ops read from other chunks.
  std::vector<std::set<std::string>> read_from_earlier(ends.size());
  for (size_t p = 0; p < positions; ++p) {
    for (const std::string& v : index.ops[index.compute_ops[p]].reads) {
      const int from = chunk_of_value(v);
      if (from >= 0 && from != chunk_of_position[p]) read_from_earlier[chunk_of_position[p]].insert(v);
    }
  }
  std::set<std::string> block_outputs(index.block->outputs().begin(), index.block->outputs().end());
  for (size_t k = 0, begin = 0; k < ends.size(); begin = ends[k++]) {
    CoreMlChunkPlan chunk;
    chunk.first_position = begin;
    chunk.end_position = ends[k];
    std::set<size_t> ops;
    std::set<std::string> function_inputs;
    auto need_constant = [&](size_t op) {
      const MilWeight& weight = index.weights[index.weight_of_op.at(op)];
      ops.insert(weight.sources.begin(), weight.sources.end());
      for (size_t s : weight.sources) {
        for (const std::string& r : index.ops[s].reads) {
          if (index.function_inputs.count(r)) function_inputs.insert(r);
        }
      }
    };
    for (size_t p = begin; p < ends[k]; ++p) {
      const size_t op = index.compute_ops[p];
      ops.insert(op);
      chunk.size_bytes += plan.position_bytes[p];
      for (const std::string& v : index.ops[op].reads) {
        auto producer = index.producer.find(v);
        if (producer == index.producer.end()) {
          function_inputs.insert(v);
        } else if (index.ops[producer->second].kind != MilOpKind::kCompute) {
          need_constant(producer->second);
        }
      }
    }
    // Constants that only the block's outputs read go with the last chunk.
    if (k + 1 == ends.size()) {
      for (const std::string& out : index.block->outputs()) {
        auto producer = index.producer.find(out);
        if (producer != index.producer.end() && index.ops[producer->second].kind != MilOpKind::kCompute)
          need_constant(producer->second);
      }
    }
    chunk.ops.assign(ops.begin(), ops.end());
    std::vector<std::pair<size_t, std::string>> crossing_in;
    for (const std::string& v : read_from_earlier[k]) crossing_in.emplace_back(index.producer.at(v), v);
    std::sort(crossing_in.begin(), crossing_in.end());
    for (const auto& [op, v] : crossing_in) chunk.crossing_in.push_back(v);
    std::vector<std::pair<size_t, std::string>> crossing_out;
    for (size_t later = k + 1; later < ends.size(); ++later) {
      for (const std::string& v : read_from_earlier[later]) {
        if (chunk_of_value(v) == static_cast<int>(k)) crossing_out.emplace_back(index.producer.at(v), v);
      }
    }
    std::sort(crossing_out.begin(), crossing_out.end());
    crossing_out.erase(std::unique(crossing_out.begin(), crossing_out.end()), crossing_out.end());
    for (const auto& [op, v] : crossing_out) chunk.crossing_out.push_back(v);
    for (const std::string& name : index.function_input_order) {
      if (function_inputs.count(name)) chunk.inputs.push_back(name);
    }
    chunk.inputs.insert(chunk.inputs.end(), chunk.crossing_in.begin(), chunk.crossing_in.end());
    chunk.outputs = chunk.crossing_out;
    for (const std::string& out : index.block->outputs()) {
      auto producer = index.producer.find(out);
      const bool made_here = producer != index.producer.end() && ops.count(producer->second) > 0 &&
                             (index.ops[producer->second].kind == MilOpKind::kCompute || k + 1 == ends.size());
      if (made_here && std::find(chunk.outputs.begin(), chunk.outputs.end(), out) == chunk.outputs.end())
        chunk.outputs.push_back(out);
    }
    plan.chunks.push_back(std::move(chunk));
  }
  ProgramOrderSplit(index, &plan);
  return plan;
}

absl::StatusOr<coreml::Model> BuildCoreMlChunk(const coreml::Model& original, const MilProgramIndex& index,
                                               const CoreMlChunkPlan& chunk) {
  coreml::Model model = original;
  const bool cast_fp16 = original.specification_version() < 7;
  // Description: the original features of the original inputs and outputs, new ones for the
  // crossing values.
  std::map<std::string, coreml::FeatureDescription> original_features;
  for (const auto& f : original.description().input()) original_features[f.name()] = f;
  for (const auto& f : original.description().output()) original_features[f.name()] = f;
  coreml::ModelDescription* description = model.mutable_description();
  description->clear_input();
  description->clear_output();
  auto boundary_feature = [&](const std::string& v) -> absl::StatusOr<coreml::FeatureDescription> {
    coreml::ValueType type = *index.types.at(v);
    std::string name = v;
    if (cast_fp16 && IsFp16(&type)) {
      type.mutable_tensor_type()->set_data_type(coreml::FLOAT32);
      name = v + kFp32Suffix;
    }
    return Feature(name, type);
  };
  for (const std::string& v : chunk.inputs) {
    if (original_features.count(v) && index.function_inputs.count(v)) {
      *description->add_input() = original_features[v];
      continue;
    }
    absl::StatusOr<coreml::FeatureDescription> feature = boundary_feature(v);
    if (!feature.ok()) return feature.status();
    *description->add_input() = *feature;
  }
  std::set<std::string> crossing_out(chunk.crossing_out.begin(), chunk.crossing_out.end());
  std::vector<std::string> block_outputs;
  for (const std::string& v : chunk.outputs) {
    if (!crossing_out.count(v) && original_features.count(v)) {
      *description->add_output() = original_features[v];
      block_outputs.push_back(v);
      continue;
    }
    absl::StatusOr<coreml::FeatureDescription> feature = boundary_feature(v);
    if (!feature.ok()) return feature.status();
    *description->add_output() = *feature;
    block_outputs.push_back(feature->name());
  }
  // The main function: inputs, then the block's ops (with the fp16 casts of a version-6 chunk).
  coreml::Function& function = (*model.mutable_ml_program()->mutable_functions())["main"];
  function.clear_inputs();
  std::vector<coreml::Operation> cast_in, cast_out;
  std::set<std::string> crossing_in(chunk.crossing_in.begin(), chunk.crossing_in.end());
  for (const std::string& v : chunk.inputs) {
    coreml::NamedValueType* input = function.add_inputs();
    input->set_name(v);
    *input->mutable_type() = *index.types.at(v);
    if (cast_fp16 && crossing_in.count(v) && IsFp16(index.types.at(v))) {
      input->set_name(v + kFp32Suffix);
      input->mutable_type()->mutable_tensor_type()->set_data_type(coreml::FLOAT32);
      cast_in.push_back(CastOp(v + kFp32Suffix, v, *index.types.at(v), coreml::FLOAT16));
    }
  }
  for (const std::string& v : chunk.crossing_out) {
    if (cast_fp16 && IsFp16(index.types.at(v)))
      cast_out.push_back(CastOp(v, v + kFp32Suffix, *index.types.at(v), coreml::FLOAT32));
  }
  coreml::Block block;
  *block.mutable_inputs() = index.block->inputs();
  *block.mutable_attributes() = index.block->attributes();
  function.clear_block_specializations();
  block.clear_operations();
  for (coreml::Operation& op : cast_in) *block.add_operations() = std::move(op);
  for (size_t op : chunk.ops) *block.add_operations() = index.block->operations(static_cast<int>(op));
  for (coreml::Operation& op : cast_out) *block.add_operations() = std::move(op);
  block.clear_outputs();
  for (const std::string& v : block_outputs) block.add_outputs(v);
  (*function.mutable_block_specializations())[index.opset] = std::move(block);
  return model;
}

}  // namespace modelsmith
