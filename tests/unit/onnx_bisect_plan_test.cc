// ONNX bisect planning on graphs built here: quantized weights attributed to their real consumer
// through DequantizeLinear and MatMulNBits, crossing counts, the cut choice, what each chunk holds,
// and hostile graphs.
#include "workers/jobs/bisect/onnx_bisect_plan.h"

#include <gtest/gtest.h>

#include "workers/common/error.h"

namespace modelsmith {
namespace {

onnx::TensorProto Initializer(const std::string& name, int32_t type, std::vector<int64_t> dims, size_t raw_bytes) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(type);
  for (int64_t d : dims) t.add_dims(d);
  t.set_raw_data(std::string(raw_bytes, '\1'));
  return t;
}

onnx::NodeProto Node(const std::string& op, std::vector<std::string> inputs, std::vector<std::string> outputs,
                     const std::string& domain = "") {
  onnx::NodeProto n;
  n.set_op_type(op);
  n.set_name(outputs.front());
  n.set_domain(domain);
  for (const auto& i : inputs) n.add_input(i);
  for (const auto& o : outputs) n.add_output(o);
  return n;
}

void AddFloatValue(google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* to, const std::string& name,
                   std::vector<int64_t> dims) {
  onnx::ValueInfoProto* v = to->Add();
  v->set_name(name);
  auto* tensor = v->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) tensor->mutable_shape()->add_dim()->set_dim_value(d);
}

// x -> MatMul(x, DequantizeLinear(w_q int8, scale, zero)) -> Tanh -> MatMulNBits(B, scales) -> Add(bias) -> y
onnx::ModelProto QuantizedChain() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(17);
  auto* ms = m.add_opset_import();
  ms->set_domain("com.microsoft");
  ms->set_version(1);
  onnx::GraphProto* g = m.mutable_graph();
  *g->add_initializer() = Initializer("w_q", onnx::TensorProto::INT8, {64, 64}, 4096);
  *g->add_initializer() = Initializer("w_scale", onnx::TensorProto::FLOAT, {64}, 256);
  *g->add_initializer() = Initializer("w_zero", onnx::TensorProto::INT8, {64}, 64);
  *g->add_initializer() =
      Initializer("B", onnx::TensorProto::UINT8, {64, 2, 16}, 8192);  // raw size stands in for a bigger layer
  *g->add_initializer() = Initializer("scales", onnx::TensorProto::FLOAT, {64, 2}, 512);
  *g->add_initializer() = Initializer("bias", onnx::TensorProto::FLOAT, {64}, 256);
  *g->add_initializer() = Initializer("unused", onnx::TensorProto::FLOAT, {1000}, 4000);
  *g->add_node() = Node("DequantizeLinear", {"w_q", "w_scale", "w_zero"}, {"w"});
  *g->add_node() = Node("MatMul", {"x", "w"}, {"m"});
  *g->add_node() = Node("Add", {"m", "bias"}, {"m_b"});
  *g->add_node() = Node("Tanh", {"m_b"}, {"t"});
  onnx::NodeProto nbits = Node("MatMulNBits", {"t", "B", "scales"}, {"n"}, "com.microsoft");
  for (const auto& [name, value] :
       {std::pair<const char*, int64_t>{"K", 64}, {"N", 64}, {"bits", 4}, {"block_size", 32}}) {
    auto* a = nbits.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(value);
  }
  *g->add_node() = nbits;
  *g->add_node() = Node("Add", {"n", "bias"}, {"y"});
  AddFloatValue(g->mutable_input(), "x", {1, 64});
  AddFloatValue(g->mutable_output(), "y", {1, 64});
  return m;
}

TEST(OnnxBisectPlan, QuantizedWeightsCountAtTheirRealConsumer) {
  absl::StatusOr<OnnxBisectPlan> plan = PlanOnnxBisect(QuantizedChain(), 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // DequantizeLinear reads only constants: no position. MatMul, Add, Tanh, MatMulNBits, Add do.
  ASSERT_EQ(plan->positions.size(), 5u);
  EXPECT_EQ(plan->position_bytes, (std::vector<uint64_t>{4096 + 256 + 64, 256, 0, 8192 + 512, 0}));
  EXPECT_EQ(plan->total_bytes, 4096u + 256 + 64 + 256 + 8192 + 512) << "the unused initializer counts nowhere";
  EXPECT_EQ(plan->crossings, (std::vector<uint32_t>{1, 1, 1, 1, 0}));
}

TEST(OnnxBisectPlan, ChunksCarryTheirConstantsInputsAndOutputs) {
  onnx::ModelProto model = QuantizedChain();
  InferOnnxTypes(model);
  absl::StatusOr<OnnxBisectPlan> plan = PlanOnnxBisect(model, 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->chunks.size(), 2u);
  const OnnxChunkPlan& first = plan->chunks[0];
  const OnnxChunkPlan& second = plan->chunks[1];
  // 4416 + 256 against 8704: the cut falls after the first Add, one tensor crossing.
  EXPECT_EQ(first.inputs, (std::vector<std::string>{"x"}));
  ASSERT_EQ(second.crossing_in.size(), 1u);
  EXPECT_EQ(first.outputs, second.crossing_in);
  EXPECT_EQ(second.outputs, (std::vector<std::string>{"y"}));
  EXPECT_EQ(first.initializers, (std::vector<std::string>{"w_q", "w_scale", "w_zero", "bias"}));
  EXPECT_EQ(second.initializers, (std::vector<std::string>{"B", "scales", "bias"}))
      << "a shared constant goes to every chunk that reads it";
  EXPECT_EQ(first.size_bytes + second.size_bytes, plan->total_bytes);

  // The chunk models: typed boundaries (MatMulNBits' output typed from its input A and N).
  for (size_t k = 0; k < 2; ++k) {
    absl::StatusOr<onnx::ModelProto> chunk = BuildOnnxChunk(model, plan->chunks[k], k, 2);
    ASSERT_TRUE(chunk.ok()) << chunk.status();
    for (const auto& v : chunk->graph().input()) EXPECT_EQ(v.type().tensor_type().shape().dim_size(), 2) << v.name();
    for (const auto& v : chunk->graph().output()) EXPECT_EQ(v.type().tensor_type().shape().dim_size(), 2) << v.name();
    EXPECT_EQ(chunk->opset_import_size(), 2);
  }
}

TEST(OnnxCuts, PreferTheCutFewTensorsCross) {
  EXPECT_EQ(ChooseOnnxCuts(std::vector<uint64_t>{10, 10, 10, 10}, std::vector<uint32_t>{3, 1, 3, 0}, 2),
            (std::vector<size_t>{2, 4}));
  // One tensor crosses only after position 2: 30 | 30 there.
  EXPECT_EQ(ChooseOnnxCuts(std::vector<uint64_t>{10, 10, 10, 10, 10, 10}, std::vector<uint32_t>{2, 2, 1, 2, 2, 0}, 2),
            (std::vector<size_t>{3, 6}));
  // The single-crossing cut would leave 200 | 1; balance wins beyond the slack.
  EXPECT_EQ(ChooseOnnxCuts(std::vector<uint64_t>{100, 100, 1}, std::vector<uint32_t>{5, 1, 0}, 2),
            (std::vector<size_t>{1, 3}));
  // Within the slack of the best (101 vs 105) the single-crossing places are kept.
  EXPECT_EQ(ChooseOnnxCuts(std::vector<uint64_t>{100, 1, 1, 1, 1}, std::vector<uint32_t>{2, 1, 1, 1, 0}, 2),
            (std::vector<size_t>{2, 5}));
}

TEST(OnnxBisectPlan, HostileGraphsAreRefusedNamingTheFault) {
  absl::StatusOr<OnnxBisectPlan> too_many = PlanOnnxBisect(QuantizedChain(), 6);
  EXPECT_EQ(ReasonOf(too_many.status()), "BISECT_TOO_MANY_CHUNKS");
  EXPECT_EQ(ContextOf(too_many.status())["field"], "bisect.chunks");

  onnx::ModelProto dangling = QuantizedChain();
  dangling.mutable_graph()->mutable_node(1)->set_input(0, "nowhere");
  absl::StatusOr<OnnxBisectPlan> plan = PlanOnnxBisect(dangling, 2);
  EXPECT_EQ(ReasonOf(plan.status()), "ONNX_GRAPH_INVALID");
  EXPECT_NE(plan.status().message().find("'nowhere'"), std::string::npos) << plan.status();

  onnx::ModelProto cycle = QuantizedChain();
  cycle.mutable_graph()->mutable_node(1)->set_input(0, "t");  // MatMul reads Tanh's output, which needs MatMul
  EXPECT_EQ(ReasonOf(PlanOnnxBisect(cycle, 2).status()), "ONNX_GRAPH_INVALID");

  onnx::ModelProto twice = QuantizedChain();
  twice.mutable_graph()->mutable_node(3)->set_output(0, "m");
  EXPECT_EQ(ReasonOf(PlanOnnxBisect(twice, 2).status()), "ONNX_GRAPH_INVALID");
}

TEST(OnnxGraph, ExternalDataMustStayInsideTheModelsDirectory) {
  onnx::TensorProto t = Initializer("w", onnx::TensorProto::FLOAT, {4}, 0);
  t.clear_raw_data();
  t.set_data_location(onnx::TensorProto::EXTERNAL);
  for (const auto& [key, value] :
       {std::pair<const char*, const char*>{"location", "../../etc/passwd"}, {"offset", "0"}, {"length", "16"}}) {
    auto* kv = t.add_external_data();
    kv->set_key(key);
    kv->set_value(value);
  }
  EXPECT_EQ(ReasonOf(OnnxExternalDataOf(t).status()), "ONNX_EXTERNAL_DATA_INVALID");
  t.mutable_external_data(0)->set_value("weights.bin");
  absl::StatusOr<std::optional<OnnxExternalData>> ok = OnnxExternalDataOf(t);
  ASSERT_TRUE(ok.ok() && ok->has_value());
  EXPECT_EQ((*ok)->length, 16u);
  EXPECT_EQ(OnnxStoredBytes(t), 16u);
}

}  // namespace
}  // namespace modelsmith
