// The bisect job on Core ML packages through the real modelsmithd and the CLI. The packages come
// from tests/tools/make_coreml_package.py (python3-protobuf with our proto/coreml/mlmodel.proto):
// fp16 weights, iOS16 constexpr_affine_dequantize and constexpr_sparse_to_dense, iOS18 4-bit
// constexpr_lut_to_dense and constexpr_blockwise_shift_scale, and the seed's shape (every
// compressed weight declared at the top). tests/tools/mil_eval.py runs the original and the
// chained chunks in numpy and compares the outputs bit for bit.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "nlohmann/json.hpp"
#include "tests/support/read_file.h"
#include "tests/support/server_test.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Debian's interpreter: python3-protobuf and python3-numpy are installed for it.
constexpr const char* kDebianPython = "/usr/bin/python3";

class BisectCoreMlTest : public ServerTest {
 protected:
  std::string MakePackage(const std::string& name, std::vector<std::string> flags) {
    const std::string path = data_ + "/" + name + ".mlpackage";
    std::vector<std::string> argv = {kDebianPython, SourceDir() + "/tests/tools/make_coreml_package.py", path};
    argv.insert(argv.end(), flags.begin(), flags.end());
    CommandResult made = RunCommand(argv);
    EXPECT_EQ(made.exit_code, 0) << made.out << made.err;
    return path;
  }

  json Bisect(const std::string& input, const std::string& out, const std::string& chunks,
              std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {"submit", "bisect",   "--input", input,    "--output",
                                     out,      "--chunks", chunks,    "--watch"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    CommandResult run = Cli(argv);
    EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
    const std::string stem = fs::path(input).stem();
    return json::parse(ReadFile(out + "/" + stem + ".chunks.json"));
  }

  void ExpectChunksComputeTheOriginal(const std::string& original, const std::string& index_path) {
    CommandResult ran =
        RunCommand({kDebianPython, SourceDir() + "/tests/tools/mil_eval.py", "compare", original, index_path});
    EXPECT_EQ(ran.exit_code, 0) << ran.out << ran.err;
    EXPECT_NE(ran.out.find("\"outputs\": [\"y\"], \"mismatches\": []"), std::string::npos) << ran.out;
  }
};

TEST_F(BisectCoreMlTest, EveryCompressionSplitsIntoPackagesThatComputeTheOriginal) {
  std::map<std::string, std::string> packages;
  for (const std::string kind : {"fp16", "affine8", "sparse", "lut4", "blockwise"})
    packages[kind] = MakePackage(kind, {"--kind", kind, "--layers", "4"});
  Start();
  for (const auto& [kind, package] : packages) {
    const std::string out = data_ + "/out-" + kind;
    const json index = Bisect(package, out, "2");
    ASSERT_EQ(index["chunks"].size(), 2u) << kind;
    EXPECT_EQ(index["format"], "coreml");
    EXPECT_LE(index["imbalance_ratio"].get<double>(), 1.06) << kind << index.dump();
    EXPECT_EQ(index["chunks"][0]["inputs"], json({"x"}));
    EXPECT_EQ(index["chunks"][1]["crossing_in"].size(), 1u) << "cut on the residual stream: " << index.dump();
    const uint64_t original_weights = fs::file_size(package + "/Data/com.apple.CoreML/weights/weight.bin");
    for (const json& chunk : index["chunks"]) {
      const std::string dir = out + "/" + chunk["package"].get<std::string>();
      EXPECT_TRUE(fs::exists(dir + "/Manifest.json")) << dir;
      EXPECT_TRUE(fs::exists(dir + "/Data/com.apple.CoreML/model.mlmodel")) << dir;
      const uint64_t weights = fs::file_size(dir + "/Data/com.apple.CoreML/weights/weight.bin");
      EXPECT_EQ(weights, chunk["weight_file_bytes"].get<uint64_t>());
      EXPECT_LT(weights, original_weights * 3 / 4) << "a chunk's weight file holds only its blobs: " << dir;
      // A field our proto does not declare (description.metadata.author) survives the rewrite.
      EXPECT_NE(ReadFile(dir + "/Data/com.apple.CoreML/model.mlmodel").find("modelsmith-test-author"),
                std::string::npos)
          << dir;
    }
    ExpectChunksComputeTheOriginal(package, out + "/" + kind + ".chunks.json");
  }
}

TEST_F(BisectCoreMlTest, InspectShowsTheProgramAndTheStoredBytesOfEachWeight) {
  const std::string package = MakePackage("lut", {"--kind", "lut4", "--layers", "1"});
  Start();
  CommandResult run = Cli({"inspect", package});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("format coreml-mlprogram"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("ML Program, specification version 9, opset CoreML8"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("input  x fp16 [1, 4, 32]"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("constexpr_lut_to_dense"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("uint4+fp16"), std::string::npos) << run.out;
}

TEST_F(BisectCoreMlTest, TheSeedsShapeSplitsEvenlyWhereAProgramOrderCountSplits98To2) {
  // coremltools#2320: compressed weights declared at the top of the block.
  const std::string seed = MakePackage("seed", {"--kind", "lut4", "--top", "--layers", "4", "--dim", "128"});
  Start();
  const json index = Bisect(seed, data_ + "/out", "2");
  const double first = index["program_order_split"]["first_bytes"].get<double>();
  const double second = index["program_order_split"]["second_bytes"].get<double>();
  EXPECT_GT(first / (first + second), 0.95) << "what bisect_model's count does: " << index.dump();
  EXPECT_LE(index["imbalance_ratio"].get<double>(), 1.05) << index.dump();
  const double a = index["chunks"][0]["size_bytes"].get<double>(), b = index["chunks"][1]["size_bytes"].get<double>();
  EXPECT_GT(std::min(a, b) / (a + b), 0.45) << index.dump();
  ExpectChunksComputeTheOriginal(seed, data_ + "/out/seed.chunks.json");
}

TEST_F(BisectCoreMlTest, ThreeAndFourChunksAndAPipelinePackage) {
  const std::string model = MakePackage("model", {"--kind", "affine8", "--layers", "6"});
  Start();
  for (const std::string chunks : {"3", "4"}) {
    const json index = Bisect(model, data_ + "/out" + chunks, chunks);
    ASSERT_EQ(index["chunks"].size(), static_cast<size_t>(std::stoi(chunks)));
    ExpectChunksComputeTheOriginal(model, data_ + "/out" + chunks + "/model.chunks.json");
  }
  const json index = Bisect(model, data_ + "/pipe", "3", {"--pipeline"});
  EXPECT_TRUE(index["pipeline"].get<bool>());
  const std::string dir = data_ + "/pipe/model-pipeline-of-3.mlpackage";
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(fs::exists(dir + "/Data/com.apple.CoreML/weights/" + std::to_string(i) + "-weight.bin")) << i;
  EXPECT_FALSE(fs::exists(data_ + "/pipe/model-chunk1-of-3.mlpackage"));
  ExpectChunksComputeTheOriginal(model, data_ + "/pipe/model.chunks.json");
}

TEST_F(BisectCoreMlTest, Fp16BoundariesOfASpec6ProgramPassAsFloat32) {
  const std::string model = MakePackage("old", {"--kind", "fp16", "--spec", "6", "--layers", "4"});
  Start();
  const json index = Bisect(model, data_ + "/out", "2");
  EXPECT_EQ(index["fp16_boundaries"], "cast to fp32");
  const std::string crossing = index["chunks"][1]["crossing_in"][0];
  const std::string chunk2 = ReadFile(data_ + "/out/old-chunk2-of-2.mlpackage/Data/com.apple.CoreML/model.mlmodel");
  EXPECT_NE(chunk2.find(crossing + "_fp32"), std::string::npos) << "chunk 2 takes the float32 copy";
  ExpectChunksComputeTheOriginal(model, data_ + "/out/old.chunks.json");
}

TEST_F(BisectCoreMlTest, TheSameInputGivesByteIdenticalPackages) {
  const std::string model = MakePackage("model", {"--kind", "blockwise", "--layers", "4"});
  Start();
  Bisect(model, data_ + "/a", "2");
  Bisect(model, data_ + "/b", "2");
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(data_ + "/a")) {
    if (!entry.is_regular_file() || entry.path().filename() == "modelsmith.manifest.json") continue;
    const std::string relative = fs::relative(entry.path(), data_ + "/a");
    EXPECT_EQ(ReadFile(entry.path()), ReadFile(data_ + "/b/" + relative)) << relative;
    ++files;
  }
  EXPECT_EQ(files, 7);  // two packages of three files, and the chunk index
}

TEST_F(BisectCoreMlTest, HostilePackagesAreRefusedWithTheFileOrOpAtFault) {
  const std::map<std::string, std::string> expected = {
      {"blob-past-end", "MIL_BLOB_INVALID"},       {"bad-sentinel", "MIL_BLOB_INVALID"},
      {"wrong-count", "MIL_BLOB_INVALID"},         {"bad-offset", "MIL_BLOB_INVALID"},
      {"undefined-value", "MIL_PROGRAM_INVALID"},  {"cycle", "only a later op defines"},
      {"truncated-model", "COREML_MODEL_INVALID"}, {"manifest-climb", "COREML_PACKAGE_INVALID"},
      {"symlink", "COREML_PACKAGE_INVALID"},       {"neural-network", "UNSUPPORTED_FORMAT"},
      {"wrong-dtype", "MIL_PROGRAM_INVALID"}};
  for (const auto& [mode, reason] : expected) {
    fs::create_directories(data_ + "/" + mode);
    const std::string package = MakePackage(mode + "/model", {"--kind", "fp16", "--layers", "2"});
    CommandResult broken =
        RunCommand({kDebianPython, SourceDir() + "/tests/tools/corrupt_coreml_package.py", package, mode});
    ASSERT_EQ(broken.exit_code, 0) << broken.err;
  }
  fs::create_directories(data_ + "/compiled.mlmodelc");
  Start();
  for (const auto& [mode, reason] : expected) {
    CommandResult run = Cli(
        {"submit", "bisect", "--input", data_ + "/" + mode + "/model.mlpackage", "--output", data_ + "/out-" + mode});
    EXPECT_EQ(run.exit_code, 2) << mode << run.out;
    EXPECT_NE(run.err.find(reason), std::string::npos) << mode << ": " << run.err;
    EXPECT_NE(run.err.find("INVALID_ARGUMENT"), std::string::npos) << mode << ": " << run.err;
    ExpectNothingLeftIn(data_ + "/out-" + mode);
  }
  CommandResult compiled =
      Cli({"submit", "bisect", "--input", data_ + "/compiled.mlmodelc", "--output", data_ + "/out-compiled"});
  EXPECT_EQ(compiled.exit_code, 2);
  EXPECT_NE(compiled.err.find("UNSUPPORTED_FORMAT"), std::string::npos) << compiled.err;
  CommandResult pipeline_without_coreml =
      Cli({"submit", "bisect", "--input", data_ + "/x.safetensors", "--output", data_ + "/out-x", "--pipeline"});
  EXPECT_EQ(pipeline_without_coreml.exit_code, 2);
  EXPECT_NE(pipeline_without_coreml.err.find("bisect.pipeline"), std::string::npos) << pipeline_without_coreml.err;
}

}  // namespace
}  // namespace modelsmith::testing
