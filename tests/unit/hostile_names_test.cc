// Untrusted patterns and names: RE2 patterns (linear time, no recursion) and the 4 KiB limit every
// reader puts on tensor names. The inputs that used to crash the server or burn minutes of CPU
// (a 50 KB tensor name under std::regex, "(a*)*b" on a 20-character name) must come back as
// values: a match result or an INVALID_ARGUMENT naming the field or file.
#include <gtest/gtest.h>

#include <filesystem>

#include "onnx/onnx_pb.h"
#include "tests/support/f32_safetensors.h"
#include "tests/support/memory_object.h"
#include "tests/support/temp_dir.h"
#include "tests/support/torch_file.h"
#include "workers/common/error.h"
#include "workers/common/pattern.h"
#include "workers/formats/model_view.h"
#include "workers/formats/onnx_graph.h"
#include "workers/formats/tensor_name.h"
#include "workers/jobs/job_kinds.h"

namespace modelsmith {
namespace {

TEST(Pattern, PathologicalPatternOnLongTextReturns) {
  absl::StatusOr<Pattern> p = Pattern::Compile("(a*)*b", "quantize.include[0]");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->FullMatch(std::string(20, 'a')));
  EXPECT_FALSE(p->FullMatch(std::string(200'000, 'a')));  // std::regex: hours, or a stack overflow
  EXPECT_TRUE(p->FullMatch(std::string(200'000, 'a') + "b"));
  EXPECT_TRUE(p->PartialMatch("xxab"));
}

TEST(Pattern, BackreferencesAndLookaroundAreRefusedNamingTheField) {
  for (const char* bad : {"(a)\\1", "(?=a)b", "a(?!b)", "[unclosed"}) {
    absl::StatusOr<Pattern> p = Pattern::Compile(bad, "convert.keep[2]");
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ReasonOf(p.status()), "INVALID_REGEX");
    EXPECT_EQ(ContextOf(p.status())["field"], "convert.keep[2]");
  }
}

TEST(Pattern, ReplacementUsesDollarGroupsOnAWholeMatch) {
  absl::StatusOr<Pattern> p = Pattern::Compile("layers\\.(\\d+)\\.(.*)", "convert.rename[0]");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->ReplaceFullMatch("layers.3.mlp.weight", "model.layers.$1.$2"), "model.layers.3.mlp.weight");
  EXPECT_EQ(p->ReplaceFullMatch("layers.3.mlp", "[$&] $$1 $9"), "[layers.3.mlp] $1 ");
  EXPECT_EQ(p->ReplaceFullMatch("x.layers.3.mlp", "y"), std::nullopt);  // whole names only
}

std::string LongName(size_t bytes) { return "model." + std::string(bytes, 'n') + ".weight"; }

TEST(TensorNames, SafetensorsNameOver4KiBIsRefusedNamingTheFile) {
  TempDir dir;
  const std::string path = dir.path() + "/long.safetensors";
  testing::WriteSafetensors(path, {testing::Random(LongName(200'000), {4, 4}, 1)});
  StorageRouter router({dir.path()});
  absl::StatusOr<ModelView> model = OpenModel(*router.Resolve(path));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(ReasonOf(model.status()), "TENSOR_NAME_TOO_LONG");
  EXPECT_EQ(ContextOf(model.status())["file"], path);
  EXPECT_LT(model.status().message().size(), 1000u) << "the message must not carry the whole name";

  // The submit that crashed the server: a layout quantize of that file, no pattern from the client.
  v1::JobSpec spec;
  spec.mutable_quantize()->set_input(path);
  spec.mutable_quantize()->set_output(dir.path() + "/out");
  spec.mutable_quantize()->set_scheme("bnb_int8");
  absl::StatusOr<uint64_t> estimate = PreflightJob(spec, router);
  ASSERT_FALSE(estimate.ok());
  EXPECT_EQ(ReasonOf(estimate.status()), "TENSOR_NAME_TOO_LONG");
}

TEST(TensorNames, ANameOfExactly4KiBIsAccepted) {
  EXPECT_TRUE(CheckTensorNameLength(std::string(kMaxTensorNameBytes, 'n'), "f").ok());
  EXPECT_EQ(ReasonOf(CheckTensorNameLength(std::string(kMaxTensorNameBytes + 1, 'n'), "f")), "TENSOR_NAME_TOO_LONG");
}

TEST(TensorNames, TorchKeyOver4KiBIsRefusedNamingTheFile) {
  TempDir dir;
  const std::string path = dir.path() + "/pytorch_model.bin";
  WriteTorchCheckpoint(path, "pytorch_model", {{LongName(50'000), DType::kF32, {2, 2}}},
                       [](size_t, uint64_t, char* data, size_t size) { std::memset(data, 0, size); });
  StorageRouter router({dir.path()});
  absl::StatusOr<ModelView> model = OpenModel(*router.Resolve(path));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(ReasonOf(model.status()), "TENSOR_NAME_TOO_LONG") << model.status();
}

TEST(TensorNames, OnnxValueNameOver4KiBIsRefusedNamingTheFile) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(17);
  onnx::GraphProto* graph = model.mutable_graph();
  graph->set_name("g");
  onnx::NodeProto* node = graph->add_node();
  node->set_op_type("Relu");
  node->add_input("x");
  node->add_output(LongName(10'000));
  std::string bytes;
  ASSERT_TRUE(model.SerializeToString(&bytes));
  absl::StatusOr<onnx::ModelProto> read = ReadOnnxModel(MemoryObject(bytes, "long.onnx"));
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(ReasonOf(read.status()), "TENSOR_NAME_TOO_LONG");
  EXPECT_EQ(ContextOf(read.status())["file"], "long.onnx");
}

}  // namespace
}  // namespace modelsmith
