// The bisect job on ONNX graphs through the real modelsmithd and the CLI. The graphs come from
// tests/tools/make_onnx_model.py (Debian's python3-onnx): int8 QDQ and com.microsoft.MatMulNBits
// 4-bit layers on a residual stream, inline or with external data. Every chunk passes the ONNX
// checker, and tests/tools/run_onnx_chunks.js runs the original and the chained chunks with
// onnxruntime-node (pinned in tests/package.json) and compares the outputs bit for bit.
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

// Debian's interpreter: python3-onnx is installed for it, not for another python3 on PATH.
constexpr const char* kDebianPython = "/usr/bin/python3";

class BisectOnnxTest : public ServerTest {
 protected:
  void MakeModel(const std::string& path, std::vector<std::string> flags) {
    std::vector<std::string> argv = {kDebianPython, SourceDir() + "/tests/tools/make_onnx_model.py", path};
    argv.insert(argv.end(), flags.begin(), flags.end());
    CommandResult made = RunCommand(argv);
    ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  }

  void ExpectValidChunksComputingTheOriginal(const std::string& original, const std::string& index_path) {
    const json index = json::parse(ReadFile(index_path));
    std::vector<std::string> argv = {kDebianPython, "-c",
                                     "import sys, onnx\nfor p in sys.argv[1:]: onnx.checker.check_model(p)"};
    for (const auto& chunk : index["chunks"])
      argv.push_back(fs::path(index_path).parent_path() / chunk["file"].get<std::string>());
    CommandResult checked = RunCommand(argv);
    EXPECT_EQ(checked.exit_code, 0) << checked.out << checked.err;
    CommandResult ran = RunCommand({"node", SourceDir() + "/tests/tools/run_onnx_chunks.js", original, index_path});
    EXPECT_EQ(ran.exit_code, 0) << ran.out << ran.err;
    EXPECT_NE(ran.out.find("\"mismatches\":[]"), std::string::npos) << ran.out;
  }
};

TEST_F(BisectOnnxTest, QdqAndMatMulNBitsGraphSplitsIntoValidChunksThatComputeTheSame) {
  fs::create_directories(data_ + "/mixed");
  MakeModel(data_ + "/mixed/model.onnx", {"--layers", "8", "--kind", "mixed"});
  Start();
  for (const std::string chunks : {"2", "4"}) {
    const std::string out = data_ + "/out" + chunks;
    CommandResult run = Cli(
        {"submit", "bisect", "--input", data_ + "/mixed/model.onnx", "--output", out, "--chunks", chunks, "--watch"});
    ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
    EXPECT_NE(run.out.find("node units"), std::string::npos) << run.out;
    const json index = json::parse(ReadFile(out + "/model.chunks.json"));
    ASSERT_EQ(index["chunks"].size(), static_cast<size_t>(std::stoi(chunks)));
    EXPECT_EQ(index["chunks"][0]["inputs"], json({"x"}));
    for (size_t k = 1; k < index["chunks"].size(); ++k) {
      // Cut on the residual stream between layers: exactly one tensor crosses each cut.
      EXPECT_EQ(index["chunks"][k]["crossing_in"].size(), 1u) << index.dump();
    }
    EXPECT_TRUE(fs::exists(out + "/modelsmith.manifest.json"));
    ExpectValidChunksComputingTheOriginal(data_ + "/mixed/model.onnx", out + "/model.chunks.json");
  }
}

TEST_F(BisectOnnxTest, ExternalDataStaysExternalPerChunk) {
  fs::create_directories(data_ + "/ext");
  MakeModel(data_ + "/ext/model.onnx", {"--layers", "6", "--kind", "nbits", "--external"});
  ASSERT_TRUE(fs::exists(data_ + "/ext/model.onnx.data"));
  Start();
  CommandResult run = Cli({"submit", "bisect", "--input", data_ + "/ext/model.onnx", "--output", data_ + "/chunks",
                           "--chunks", "3", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  for (int k = 1; k <= 3; ++k) {
    const std::string name = data_ + "/chunks/model-chunk" + std::to_string(k) + "-of-3.onnx";
    EXPECT_TRUE(fs::exists(name + ".data")) << name;
    EXPECT_LT(fs::file_size(name), 4096u) << "the weights are in the data file";
  }
  ExpectValidChunksComputingTheOriginal(data_ + "/ext/model.onnx", data_ + "/chunks/model.chunks.json");
}

TEST_F(BisectOnnxTest, MalformedModelsAreRefusedAtSubmit) {
  std::ofstream(data_ + "/garbage.onnx") << "this is not a protobuf";
  fs::create_directories(data_ + "/escape");
  MakeModel(data_ + "/escape/model.onnx", {"--layers", "2", "--external"});
  // Point one initializer outside the model's directory.
  CommandResult edited = RunCommand({kDebianPython, "-c",
                                     "import sys, onnx\n"
                                     "m = onnx.load(sys.argv[1], load_external_data=False)\n"
                                     "for kv in m.graph.initializer[0].external_data:\n"
                                     "    kv.value = '../../etc/passwd' if kv.key == 'location' else kv.value\n"
                                     "onnx.save(m, sys.argv[1])",
                                     data_ + "/escape/model.onnx"});
  ASSERT_EQ(edited.exit_code, 0) << edited.err;
  Start();
  CommandResult garbage = Cli({"submit", "bisect", "--input", data_ + "/garbage.onnx", "--output", data_ + "/g"});
  EXPECT_EQ(garbage.exit_code, 2);
  EXPECT_NE(garbage.err.find("ONNX_INVALID"), std::string::npos) << garbage.err;
  CommandResult escape = Cli({"submit", "bisect", "--input", data_ + "/escape/model.onnx", "--output", data_ + "/e"});
  EXPECT_EQ(escape.exit_code, 2);
  EXPECT_NE(escape.err.find("ONNX_EXTERNAL_DATA_INVALID"), std::string::npos) << escape.err;
  ExpectNothingLeftIn(data_ + "/g");
  ExpectNothingLeftIn(data_ + "/e");
}

}  // namespace
}  // namespace modelsmith::testing
