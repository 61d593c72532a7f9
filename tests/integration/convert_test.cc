// The convert job through the real modelsmithd: torch checkpoints made by torch itself
// (tests/data/torch) to safetensors, compared byte for byte with the values torch recorded
// (expected.json), including torch's own .to(float16) for the dtype cast; sharded input and
// output; names and refusals; cancel in the middle of a generated checkpoint.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "nlohmann/json.hpp"
#include "tests/support/read_file.h"
#include "tests/support/server_test.h"
#include "tests/support/torch_file.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string Hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) out += {digits[c >> 4], digits[c & 15]};
  return out;
}

// A safetensors file read independently of the service's reader: name -> (header entry, bytes).
struct Safetensors {
  json header;
  std::map<std::string, std::string> data;
};

Safetensors ReadSafetensors(const std::string& path) {
  const std::string file = ReadFile(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<unsigned char>(file[i]);
  Safetensors st;
  st.header = json::parse(file.substr(8, n));
  for (const auto& [name, entry] : st.header.items()) {
    if (name == "__metadata__") continue;
    const uint64_t begin = entry["data_offsets"][0], end = entry["data_offsets"][1];
    st.data[name] = file.substr(8 + n + begin, end - begin);
  }
  return st;
}

json Expected(const std::string& fixture) {
  return json::parse(ReadFile(SourceDir() + "/tests/data/torch/expected.json")).at(fixture);
}

class ConvertServerTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    fs::create_directories(data_ + "/in");
    fs::copy_file(SourceDir() + "/tests/data/torch/state_dict.bin", data_ + "/in/pytorch_model.bin");
  }
  // `modelsmith submit convert ARGS...` against the server.
  CommandResult Convert(std::vector<std::string> args) {
    args.insert(args.begin(), {"submit", "convert"});
    return Cli(std::move(args));
  }
};

TEST_F(ConvertServerTest, TorchBinBecomesModelSafetensorsBitForBit) {
  Start();
  CommandResult run = Convert(
      {"--input", data_ + "/in/pytorch_model.bin", "--output", data_ + "/out", "--to", "safetensors", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("TENSOR_ALIAS"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("ENTRY_SKIPPED"), std::string::npos) << run.out;
  EXPECT_NE(
      run.out.find("convert: 14 tensors in 1 file(s), 0 cast, 0 renamed, 1 tied names written once, 1 entries skipped"),
      std::string::npos)
      << run.out;

  const Safetensors st = ReadSafetensors(data_ + "/out/model.safetensors");
  // The dropped tied name is recorded as save_model records it, so that load_model restores it.
  EXPECT_EQ(st.header["__metadata__"], json({{"format", "pt"}, {"lm_head.weight", "embed.weight"}}));
  const json expected = Expected("state_dict.bin");
  ASSERT_EQ(st.data.size(), expected["tensors"].size() - 1);  // the tied lm_head.weight is written once
  for (const auto& [name, bytes] : st.data) {
    SCOPED_TRACE(name);
    const json& e = expected["tensors"].at(name);
    EXPECT_EQ(st.header[name]["dtype"], e["dtype"]);
    EXPECT_EQ(st.header[name]["shape"], e["shape"]);
    EXPECT_EQ(Hex(bytes), e["hex"].get<std::string>());  // contiguous, the transposed view included
  }
  const json manifest = json::parse(ReadFile(data_ + "/out/modelsmith.manifest.json"));
  EXPECT_EQ(manifest["kind"], "convert");
  EXPECT_EQ(manifest["convert"]["aliases"][0]["name"], "lm_head.weight");
  EXPECT_EQ(manifest["convert"]["aliases"][0]["written_as"], "embed.weight");
  EXPECT_EQ(manifest["convert"]["skipped_entries"], json::array({"config_version"}));
}

TEST_F(ConvertServerTest, Fp16VariantMatchesTorchsOwnCastAndKeepsChosenTensors) {
  Start();
  CommandResult run = Convert({"--input", data_ + "/in", "--output", data_ + "/fp16", "--to", "safetensors", "--dtype",
                               "f16", "--variant", "fp16", "--keep", ".*norm.*", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const Safetensors st = ReadSafetensors(data_ + "/fp16/model.fp16.safetensors");
  const json expected = Expected("state_dict.bin");
  for (const auto& [name, bytes] : st.data) {
    SCOPED_TRACE(name);
    const json& e = expected["tensors"].at(name);
    if (name == "layers.0.norm.weight") {
      EXPECT_EQ(st.header[name]["dtype"], "F64");  // kept
      EXPECT_EQ(Hex(bytes), e["hex"].get<std::string>());
    } else if (e.contains("f16_hex")) {
      EXPECT_EQ(st.header[name]["dtype"], "F16");
      EXPECT_EQ(Hex(bytes), e["f16_hex"].get<std::string>());  // what torch's .to(torch.float16) gave
    } else {
      EXPECT_EQ(st.header[name]["dtype"], e["dtype"]);  // integers and bools never change
      EXPECT_EQ(Hex(bytes), e["hex"].get<std::string>());
    }
  }
}

TEST_F(ConvertServerTest, ShardedBinKeepsItsShardsOrReshards) {
  fs::copy(SourceDir() + "/tests/data/torch/sharded", data_ + "/sharded");
  Start();
  CommandResult run = Convert({"--input", data_ + "/sharded/pytorch_model.bin.index.json", "--output", data_ + "/st",
                               "--to", "safetensors", "--dtype", "bf16", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const json index = json::parse(ReadFile(data_ + "/st/model.safetensors.index.json"));
  const json expected = Expected("sharded");
  EXPECT_EQ(index["weight_map"].size(), expected["tensors"].size());
  uint64_t total = 0;
  for (const char* shard : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}) {
    const Safetensors st = ReadSafetensors(data_ + "/st/" + shard);
    for (const auto& [name, bytes] : st.data) {
      EXPECT_EQ(index["weight_map"][name], shard) << name;
      const json& e = expected["tensors"].at(name);
      EXPECT_EQ(Hex(bytes), e.value("bf16_hex", e["hex"].get<std::string>())) << name;
      total += bytes.size();
    }
  }
  EXPECT_EQ(index["metadata"]["total_size"], total);

  // One file when the limit holds everything.
  CommandResult one = Convert({"--input", data_ + "/sharded", "--output", data_ + "/one", "--to", "safetensors",
                               "--max-shard-size", "1GB", "--watch"});
  ASSERT_EQ(one.exit_code, 0) << one.out << one.err;
  EXPECT_TRUE(fs::exists(data_ + "/one/model.safetensors"));
  EXPECT_FALSE(fs::exists(data_ + "/one/model.safetensors.index.json"));
  EXPECT_EQ(ReadSafetensors(data_ + "/one/model.safetensors").data.size(), expected["tensors"].size());
}

TEST_F(ConvertServerTest, RenamesApplyInOrderAndCollisionsAreRefused) {
  Start();
  CommandResult run = Convert({"--input", data_ + "/in/pytorch_model.bin", "--output", data_ + "/renamed", "--to",
                               "safetensors", "--rename", "layers\\.(\\d+)\\.(.*)=model.layers.$1.$2", "--rename",
                               "model\\.layers\\.0\\.norm\\.weight=norm.weight", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const Safetensors st = ReadSafetensors(data_ + "/renamed/model.safetensors");
  EXPECT_TRUE(st.data.count("model.layers.0.attn.q_proj.weight"));
  EXPECT_TRUE(st.data.count("norm.weight"));
  EXPECT_FALSE(st.data.count("layers.0.norm.weight"));

  CommandResult clash = Convert({"--input", data_ + "/in/pytorch_model.bin", "--output", data_ + "/clash", "--to",
                                 "safetensors", "--rename", "counts\\..*=counts", "--watch"});
  EXPECT_EQ(clash.exit_code, 2) << clash.out << clash.err;
  EXPECT_NE(clash.err.find("RENAME_COLLISION"), std::string::npos) << clash.err;
  EXPECT_FALSE(fs::exists(data_ + "/clash"));
}

TEST_F(ConvertServerTest, HostilePicklesAreRefusedAtSubmitAndNothingRuns) {
  for (const char* name : {"hostile_posix_system.bin", "hostile_builtins_eval.bin", "hostile_stack_global.bin"}) {
    fs::copy_file(SourceDir() + "/tests/data/torch/" + name, data_ + "/" + name);
  }
  Start();
  for (const auto& [name, names] :
       std::vector<std::pair<std::string, std::string>>{{"hostile_posix_system.bin", "posix.system"},
                                                        {"hostile_builtins_eval.bin", "builtins.eval"},
                                                        {"hostile_stack_global.bin", "STACK_GLOBAL"}}) {
    CommandResult run =
        Convert({"--input", data_ + "/" + name, "--output", data_ + "/h", "--to", "safetensors", "--watch"});
    EXPECT_EQ(run.exit_code, 2) << run.out << run.err;
    EXPECT_NE(run.err.find(names), std::string::npos) << run.err;
    EXPECT_NE(run.err.find("TORCH_PICKLE_FORBIDDEN"), std::string::npos) << run.err;
  }
  EXPECT_FALSE(fs::exists(data_ + "/h"));
  // The legacy format is not read: refused as such. GGUF output is a .gguf file.
  fs::copy_file(SourceDir() + "/tests/data/torch/legacy.bin", data_ + "/legacy.bin");
  CommandResult legacy = Convert({"--input", data_ + "/legacy.bin", "--output", data_ + "/l", "--to", "safetensors"});
  EXPECT_NE(legacy.err.find("TORCH_LEGACY_FORMAT"), std::string::npos) << legacy.err;
  CommandResult gguf = Convert({"--input", data_ + "/in", "--output", data_ + "/g", "--to", "gguf"});
  EXPECT_NE(gguf.err.find("INVALID_OUTPUT"), std::string::npos) << gguf.err;
}

TEST_F(ConvertServerTest, InspectReadsTorchCheckpoints) {
  std::ofstream(data_ + "/in/config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})";
  Start();
  v1::ModelInfo info;
  grpc::Status status = Inspect(*stub_, data_ + "/in/pytorch_model.bin", &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(info.format(), "torch");
  EXPECT_EQ(info.tensors_size(), 14);
  EXPECT_EQ(info.architecture(), "LlamaForCausalLM");
  ASSERT_EQ(info.aliases_size(), 1);
  EXPECT_EQ(info.aliases(0).name(), "lm_head.weight");
  EXPECT_EQ(info.aliases(0).target(), "embed.weight");
  EXPECT_EQ(info.skipped_entries_size(), 1);
  EXPECT_EQ(info.adapter_format(), "");

  // The fp8 fixture reports its quantization.
  fs::copy_file(SourceDir() + "/tests/data/torch/fp8.bin", data_ + "/fp8.bin");
  ASSERT_TRUE(Inspect(*stub_, data_ + "/fp8.bin", &info).ok());
  EXPECT_EQ(info.quantization(), "fp8_e4m3,fp8_e5m2");
}

TEST_F(ConvertServerTest, CancelInTheMiddleLeavesNothing) {
  // 8 MiB of F32 in 8 tensors, converted at 500 KB/s: the job is still running when cancelled.
  std::vector<TorchTensorSpec> tensors;
  for (int i = 0; i < 8; ++i) tensors.push_back({"layers." + std::to_string(i) + ".weight", DType::kF32, {512, 512}});
  WriteTorchCheckpoint(data_ + "/big.bin", "big", tensors, [](size_t t, uint64_t offset, char* data, size_t size) {
    for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>((t * 131 + offset + i) % 61);
  });
  Start({"--job-io-limit", "500KB"});
  v1::SubmitJobRequest request;
  v1::ConvertSpec* spec = request.mutable_spec()->mutable_convert();
  spec->set_input(data_ + "/big.bin");
  spec->set_output(data_ + "/slow");
  spec->set_target_format(v1::TARGET_FORMAT_SAFETENSORS);
  spec->set_dtype("bf16");
  v1::Job job;
  ASSERT_TRUE(Submit(*stub_, request, &job).ok());
  EXPECT_EQ(CancelOnceUnderWay(*stub_, job.id()), v1::JOB_STATE_CANCELLED);
  ExpectNothingLeftIn(data_ + "/slow");
}

}  // namespace
}  // namespace modelsmith::testing
