// The bisect job end to end on generated and committed checkpoints: chunk files in the input's
// format holding the input's bytes, the chunk index, balance by stored size (a mostly quantized
// model, the coremltools case), numeric block order, a dominant tensor, refusals and cancellation.
#include "workers/jobs/bisect/bisect_job.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "nlohmann/json.hpp"
#include "tests/support/checkpoint_files.h"
#include "tests/support/read_file.h"
#include "tests/support/recording_context.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"
#include "workers/formats/model_view.h"
#include "workers/formats/tensor_reader.h"
#include "workers/jobs/job_kinds.h"
#include "workers/storage/checksum.h"

namespace modelsmith {
namespace {

namespace fs = std::filesystem;

std::string SourcePath(const std::string& relative) { return std::string(MODELSMITH_SOURCE_DIR) + "/" + relative; }

std::vector<std::string> FileNames(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

// name -> logical bytes of every tensor of the checkpoint at `uri`.
std::map<std::string, std::string> TensorBytesOf(const StorageRouter& router, const std::string& uri) {
  std::map<std::string, std::string> bytes;
  absl::StatusOr<ModelView> model = OpenModel(*router.Resolve(uri));
  EXPECT_TRUE(model.ok()) << uri << ": " << model.status();
  if (!model.ok()) return bytes;
  for (const TensorInfo& t : model->tensors) {
    std::string data(t.size_bytes, '\0');
    EXPECT_TRUE(ReadTensorBytes(*model->files[t.file_index].object, t, 0, t.size_bytes,
                                reinterpret_cast<std::byte*>(data.data()))
                    .ok());
    bytes[t.name] = std::move(data);
  }
  for (const TensorAlias& a : model->aliases) bytes[a.name] = bytes[a.target];
  return bytes;
}

// The smallest largest chunk over every contiguous split of `sizes` into `chunks`.
uint64_t ExhaustiveBest(const std::vector<uint64_t>& sizes, size_t chunks) {
  std::function<uint64_t(size_t, size_t)> best = [&](size_t start, size_t left) -> uint64_t {
    uint64_t run = 0;
    if (left == 1) {
      for (size_t i = start; i < sizes.size(); ++i) run += sizes[i];
      return run;
    }
    uint64_t result = UINT64_MAX;
    for (size_t end = start + 1; end + left - 1 <= sizes.size(); ++end) {
      run += sizes[end - 1];
      result = std::min(result, std::max(run, best(end, left - 1)));
    }
    return result;
  };
  return best(0, chunks);
}

class BisectJobTest : public ::testing::Test {
 protected:
  absl::StatusOr<v1::JobResult> Run(const v1::BisectSpec& spec, JobContext& context) {
    JobRun run;
    run.job_id = "bisect-test";
    *run.spec.mutable_bisect() = spec;
    run.router = &router_;
    return RunJob(run, context);
  }
  absl::StatusOr<v1::JobResult> Run(const v1::BisectSpec& spec) { return Run(spec, context_); }

  v1::BisectSpec Spec(const std::string& input, const std::string& out, uint32_t chunks = 0) {
    v1::BisectSpec spec;
    spec.set_input(input);
    spec.set_output(dir_.path() + "/" + out);
    spec.set_chunks(chunks);
    return spec;
  }

  std::string WriteLlama(const std::string& dir_name, int layers, uint64_t hidden, uint64_t vocab) {
    const std::string dir = dir_.path() + "/" + dir_name;
    fs::create_directories(dir);
    WriteCheckpoint(dir + "/model.safetensors", LlamaLikeTensors(layers, hidden, vocab));
    return dir;
  }

  // Every tensor of the input is in exactly one chunk, with its bytes.
  void ExpectChunksHoldTheInput(const std::string& input, const nlohmann::json& index, const std::string& out) {
    std::map<std::string, std::string> expected = TensorBytesOf(router_, input);
    std::map<std::string, std::string> seen;
    for (const auto& chunk : index["chunks"]) {
      std::map<std::string, std::string> got = TensorBytesOf(router_, out + "/" + chunk["file"].get<std::string>());
      EXPECT_EQ(got.size(), chunk["tensors"].size());
      for (auto& [name, bytes] : got) {
        EXPECT_TRUE(seen.emplace(name, bytes).second) << name << " is in two chunks";
      }
    }
    EXPECT_EQ(seen.size(), expected.size());
    for (const auto& [name, bytes] : expected) EXPECT_EQ(seen[name], bytes) << name;
  }

  TempDir dir_;
  StorageRouter router_{{}};
  RecordingContext context_;
};

TEST_F(BisectJobTest, SafetensorsSplitsIntoTwoBalancedChunksWithIndexAndManifest) {
  const std::string input = WriteLlama("in", 4, 64, 128);
  absl::StatusOr<v1::JobResult> result = Run(Spec(input, "out"));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string out = dir_.path() + "/out";
  EXPECT_EQ(FileNames(out), (std::vector<std::string>{"model-chunk1-of-2.safetensors", "model-chunk2-of-2.safetensors",
                                                      "model.chunks.json", "modelsmith.manifest.json"}));
  const nlohmann::json index = nlohmann::json::parse(ReadFile(out + "/model.chunks.json"));
  ASSERT_EQ(index["chunks"].size(), 2u);
  // Embedding 16 KiB, four blocks of 104 KiB, norm, head 16 KiB: two blocks on each side.
  EXPECT_EQ(index["chunks"][0]["units"], nlohmann::json({"model.embed_tokens", "model.layers.0", "model.layers.1"}));
  EXPECT_EQ(index["chunks"][0]["blocks"], nlohmann::json({"model.layers.0", "model.layers.1"}));
  EXPECT_EQ(index["chunks"][1]["units"], nlohmann::json({"model.layers.2", "model.layers.3", "model.norm", "lm_head"}));
  EXPECT_EQ(index["chunks"][0]["tensors"][0], "model.embed_tokens.weight");
  EXPECT_EQ(index["chunks"][1]["tensors"].back(), "lm_head.weight");
  EXPECT_EQ(index["format"], "safetensors");
  EXPECT_EQ(index["granularity"], "block");
  ExpectChunksHoldTheInput(input, index, out);

  const v1::BisectFigures& f = result->figures().bisect();
  ASSERT_EQ(f.chunk_sizes_bytes_size(), 2);
  const uint64_t block = 4 * 8192 + 3 * 24576 + 2 * 256;
  EXPECT_EQ(f.chunk_sizes_bytes(0), 16384 + 2 * block);
  EXPECT_EQ(f.chunk_sizes_bytes(1), 2 * block + 256 + 16384);
  EXPECT_DOUBLE_EQ(f.imbalance_ratio(), static_cast<double>(16384 + 2 * block + 256) / (16384 + 2 * block + 128));
  EXPECT_EQ(f.units(), 7u);
  EXPECT_EQ(f.granularity(), "block");
  for (int k = 0; k < 2; ++k) {
    const std::string file = out + "/" + index["chunks"][k]["file"].get<std::string>();
    EXPECT_EQ(f.chunk_file_bytes(k), fs::file_size(file));
    EXPECT_EQ(index["chunks"][k]["sha256"], Sha256Hex(ReadFile(file)));
    EXPECT_EQ(index["chunks"][k]["size_bytes"], f.chunk_sizes_bytes(k));
  }
  const nlohmann::json manifest = nlohmann::json::parse(ReadFile(out + "/modelsmith.manifest.json"));
  EXPECT_EQ(manifest["kind"], "bisect");
  EXPECT_EQ(manifest["artifacts"].size(), 3u);
  EXPECT_EQ(result->artifacts(0).role(), "chunk");
  EXPECT_EQ(result->artifacts(2).role(), "index");
  EXPECT_EQ(result->artifacts(3).role(), "manifest");
  const std::vector<v1::Progress> progress = context_.progress();
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().bytes_done(), progress.back().bytes_total());

  // The same input and spec give the same bytes.
  ASSERT_TRUE(Run(Spec(input, "again")).ok());
  for (const char* name : {"model-chunk1-of-2.safetensors", "model-chunk2-of-2.safetensors", "model.chunks.json"}) {
    EXPECT_EQ(ReadFile(out + "/" + name), ReadFile(dir_.path() + "/again/" + name)) << name;
  }
}

// The coremltools case (formats.md §9): weights mostly stored as packed 4-bit with their absmax,
// quant maps and quant states. Counted at their stored size with their weights, the split is the
// best any contiguous split by blocks can be, and within a few percent of an even one.
TEST_F(BisectJobTest, MostlyQuantizedModelSplitsByStoredBytes) {
  const std::string float_dir = dir_.path() + "/float";
  fs::create_directories(float_dir);
  WriteFloatCheckpoint(float_dir + "/model.safetensors", LlamaLikeTensors(8, 64, 128));
  JobRun quantize;
  quantize.job_id = "quantize";
  quantize.router = &router_;
  v1::QuantizeSpec* q = quantize.spec.mutable_quantize();
  q->set_input(float_dir);
  q->set_output(dir_.path() + "/nf4");
  q->set_scheme("bnb_nf4");
  q->set_double_quant(true);
  ASSERT_TRUE(RunJob(quantize, context_).ok());

  for (uint32_t chunks : {2u, 3u, 4u}) {
    const std::string out = "out" + std::to_string(chunks);
    absl::StatusOr<v1::JobResult> result = Run(Spec(dir_.path() + "/nf4", out, chunks));
    ASSERT_TRUE(result.ok()) << result.status();
    // The unit sizes, from the quantized file's own tensor table: a block is all its tensors.
    absl::StatusOr<ModelView> model = OpenModel(*router_.Resolve(dir_.path() + "/nf4"));
    ASSERT_TRUE(model.ok());
    std::map<std::string, uint64_t> block_bytes;
    uint64_t embed = 0, norm = 0, head = 0, total = 0;
    for (const TensorInfo& t : model->tensors) {
      total += t.size_bytes;
      if (t.name.rfind("model.layers.", 0) == 0) {
        const size_t dot = t.name.find('.', 13);
        block_bytes[t.name.substr(0, dot)] += t.size_bytes;
      } else if (t.name.find("embed") != std::string::npos) {
        embed += t.size_bytes;
      } else if (t.name.find("norm") != std::string::npos) {
        norm += t.size_bytes;
      } else {
        head += t.size_bytes;
      }
    }
    std::vector<uint64_t> sizes = {embed};
    for (int layer = 0; layer < 8; ++layer) sizes.push_back(block_bytes.at("model.layers." + std::to_string(layer)));
    sizes.push_back(norm);
    sizes.push_back(head);
    const v1::BisectFigures& f = result->figures().bisect();
    uint64_t largest = 0, sum = 0;
    for (uint64_t s : f.chunk_sizes_bytes()) largest = std::max(largest, s), sum += s;
    EXPECT_EQ(sum, total) << "every stored byte is counted once";
    EXPECT_EQ(largest, ExhaustiveBest(sizes, chunks)) << chunks << " chunks";
    // Eight equal blocks and two small float tensors halve evenly; with more chunks whole blocks
    // allow less, which the exhaustive comparison above covers.
    if (chunks == 2) EXPECT_LT(f.imbalance_ratio(), 1.05);
    ExpectChunksHoldTheInput(dir_.path() + "/nf4",
                             nlohmann::json::parse(ReadFile(dir_.path() + "/" + out + "/model.chunks.json")),
                             dir_.path() + "/" + out);
  }
}

TEST_F(BisectJobTest, ShardedInputIsOrderedByBlockNumberNotByName) {
  // Twelve blocks over two shards, through the index; string order would put layers.10 after layers.1.
  const std::string input = WriteLlama("one", 12, 32, 64);
  v1::JobSpec shard;
  shard.mutable_shard()->set_input(input);
  shard.mutable_shard()->set_output(dir_.path() + "/sharded");
  shard.mutable_shard()->set_max_shard_size("200KB");
  JobRun run;
  run.job_id = "shard";
  run.spec = shard;
  run.router = &router_;
  ASSERT_TRUE(RunJob(run, context_).ok());

  absl::StatusOr<v1::JobResult> result = Run(Spec(dir_.path() + "/sharded/model.safetensors.index.json", "out", 3));
  ASSERT_TRUE(result.ok()) << result.status();
  const nlohmann::json index = nlohmann::json::parse(ReadFile(dir_.path() + "/out/model.chunks.json"));
  std::vector<std::string> blocks;
  for (const auto& chunk : index["chunks"]) {
    EXPECT_EQ(chunk["blocks"].size(), 4u);
    for (const auto& b : chunk["blocks"]) blocks.push_back(b);
  }
  std::vector<std::string> expected;
  for (int layer = 0; layer < 12; ++layer) expected.push_back("model.layers." + std::to_string(layer));
  EXPECT_EQ(blocks, expected);
  EXPECT_EQ(index["chunks"][2]["file"], "model-chunk3-of-3.safetensors");
  ExpectChunksHoldTheInput(dir_.path() + "/sharded", index, dir_.path() + "/out");
}

TEST_F(BisectJobTest, SingleHugeTensorGetsTheBestSplitAndNoEmptyChunk) {
  const std::string dir = dir_.path() + "/huge";
  fs::create_directories(dir);
  // The embedding holds 90% of the bytes.
  WriteCheckpoint(dir + "/model.safetensors", {{"model.embed_tokens.weight", DType::kF16, {4096, 64}},
                                               {"model.layers.0.mlp.weight", DType::kF16, {64, 64}},
                                               {"model.layers.1.mlp.weight", DType::kF16, {64, 64}},
                                               {"lm_head.weight", DType::kF16, {64, 64}}});
  absl::StatusOr<v1::JobResult> result = Run(Spec(dir, "out"));
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::BisectFigures& f = result->figures().bisect();
  EXPECT_EQ(f.chunk_sizes_bytes(0), 4096u * 64 * 2);
  EXPECT_EQ(f.chunk_sizes_bytes(1), 3u * 64 * 64 * 2);
  EXPECT_NEAR(f.imbalance_ratio(), 2.0 * 524288 / (524288 + 24576), 1e-12);
}

TEST_F(BisectJobTest, MoreChunksThanBlocksIsRefusedNamingTheCount) {
  const std::string input = WriteLlama("in", 2, 32, 64);  // embed, 2 blocks, norm, head: 5 units; 21 modules
  absl::StatusOr<v1::JobResult> result = Run(Spec(input, "out", 6));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(result.status()), "BISECT_TOO_MANY_CHUNKS");
  EXPECT_EQ(ContextOf(result.status())["field"], "bisect.chunks");
  EXPECT_NE(result.status().message().find("only 5 block unit(s)"), std::string::npos) << result.status();
  EXPECT_NE(result.status().message().find("granularity 'module' gives 21 units"), std::string::npos)
      << result.status();
  EXPECT_FALSE(fs::exists(dir_.path() + "/out"));
  // Refused at submit time too.
  v1::JobSpec spec;
  *spec.mutable_bisect() = Spec(input, "out", 6);
  EXPECT_EQ(ReasonOf(PreflightJob(spec, router_).status()), "BISECT_TOO_MANY_CHUNKS");

  // Finer granularity allows it.
  v1::BisectSpec modules = Spec(input, "modules", 6);
  modules.set_granularity(v1::BISECT_GRANULARITY_MODULE);
  absl::StatusOr<v1::JobResult> by_module = Run(modules);
  ASSERT_TRUE(by_module.ok()) << by_module.status();
  EXPECT_EQ(by_module->figures().bisect().chunk_count(), 6u);
  EXPECT_EQ(by_module->figures().bisect().units(), 21u);
}

TEST_F(BisectJobTest, InvalidSpecsNameTheField) {
  for (uint32_t chunks : {1u, kMaxBisectChunks + 1}) {
    v1::JobSpec spec;
    *spec.mutable_bisect() = Spec("x", "out", chunks);
    absl::Status s = ValidateSpec(spec);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ContextOf(s)["field"], "bisect.chunks");
  }
  v1::JobSpec spec;
  spec.mutable_bisect()->set_input("x");
  EXPECT_EQ(ContextOf(ValidateSpec(spec))["field"], "bisect.output");
  spec.mutable_bisect()->set_output("y");
  spec.mutable_bisect()->set_granularity(static_cast<v1::BisectGranularity>(9));
  EXPECT_EQ(ContextOf(ValidateSpec(spec))["field"], "bisect.granularity");
  absl::StatusOr<v1::JobResult> missing = Run(Spec(dir_.path() + "/nothing.safetensors", "out"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(BisectJobTest, TorchCheckpointGivesTorchChunksThatZipfileAccepts) {
  // torch's own file: views, a tied weight, a non-contiguous view, many dtypes.
  const std::string input = SourcePath("tests/data/torch/state_dict.bin");
  v1::BisectSpec spec = Spec(input, "out");
  spec.set_granularity(v1::BISECT_GRANULARITY_TENSOR);
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string out = dir_.path() + "/out";
  const nlohmann::json index = nlohmann::json::parse(ReadFile(out + "/state_dict.chunks.json"));
  EXPECT_EQ(index["chunks"][0]["file"], "state_dict-chunk1-of-2.bin");
  ExpectChunksHoldTheInput(input, index, out);
  ASSERT_EQ(context_.warnings().size(), 1u);  // "config_version", a non-tensor entry
  EXPECT_EQ(context_.warnings()[0].first, "BISECT_ENTRIES_DROPPED");
  for (const auto& chunk : index["chunks"]) {
    const std::string path = out + "/" + chunk["file"].get<std::string>();
    testing::CommandResult zip = testing::RunCommand(
        {"python3", "-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); sys.exit(z.testzip() or 0)", path});
    EXPECT_EQ(zip.exit_code, 0) << path << ": " << zip.out << zip.err;
  }
}

TEST_F(BisectJobTest, ShardedTorchCheckpointIsSplitThroughItsIndex) {
  const std::string input = SourcePath("tests/data/torch/sharded");
  absl::StatusOr<v1::JobResult> result = Run(Spec(input, "out"));
  ASSERT_TRUE(result.ok()) << result.status();
  const nlohmann::json index = nlohmann::json::parse(ReadFile(dir_.path() + "/out/pytorch_model.chunks.json"));
  EXPECT_EQ(index["chunks"][1]["file"], "pytorch_model-chunk2-of-2.bin");
  EXPECT_EQ(index["format"], "torch-sharded");
  ExpectChunksHoldTheInput(input, index, dir_.path() + "/out");
}

TEST_F(BisectJobTest, GgufKeepsItsMetadataAndQuantizedBlocks) {
  const std::string input = SourcePath("tests/data/golden/gguf/expected-Q4_K.gguf");
  absl::StatusOr<v1::JobResult> result = Run(Spec(input, "out"));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string out = dir_.path() + "/out";
  const nlohmann::json index = nlohmann::json::parse(ReadFile(out + "/expected-Q4_K.chunks.json"));
  EXPECT_EQ(index["chunks"][0]["file"], "expected-Q4_K-chunk1-of-2.gguf");
  EXPECT_EQ(index["chunks"][0]["tensors"][0], "token_embd.weight");
  ExpectChunksHoldTheInput(input, index, out);
  absl::StatusOr<ModelView> source = OpenModel(*router_.Resolve(input));
  absl::StatusOr<ModelView> chunk = OpenModel(*router_.Resolve(out + "/expected-Q4_K-chunk2-of-2.gguf"));
  ASSERT_TRUE(source.ok() && chunk.ok());
  EXPECT_EQ(chunk->gguf->kvs.size(), source->gguf->kvs.size());
  for (size_t i = 0; i < source->gguf->kvs.size(); ++i) {
    EXPECT_EQ(chunk->gguf->kvs[i].key, source->gguf->kvs[i].key);
    EXPECT_EQ(chunk->gguf->kvs[i].value_bytes, source->gguf->kvs[i].value_bytes);
  }
  for (const TensorInfo& t : chunk->tensors) {
    for (const TensorInfo& s : source->tensors) {
      if (s.name == t.name) EXPECT_EQ(s.ggml_type, t.ggml_type) << t.name;
    }
  }
}

TEST_F(BisectJobTest, SplitGgufIsReadAsOneModelAndNamedByItsPrefix) {
  JobRun quantize;
  quantize.job_id = "quantize";
  quantize.router = &router_;
  v1::QuantizeSpec* q = quantize.spec.mutable_quantize();
  q->set_input(SourcePath("tests/data/golden/gguf/input-f32.gguf"));
  fs::create_directories(dir_.path() + "/split");
  q->set_output(dir_.path() + "/split/llama-Q8_0.gguf");
  q->set_scheme("Q8_0");
  q->set_max_split_size("300KB");
  ASSERT_TRUE(RunJob(quantize, context_).ok());
  std::vector<std::string> parts;
  for (const std::string& name : FileNames(dir_.path() + "/split")) {
    if (name.find("-of-") != std::string::npos) parts.push_back(dir_.path() + "/split/" + name);
  }
  ASSERT_GT(parts.size(), 1u);

  // Named by any part.
  absl::StatusOr<v1::JobResult> result = Run(Spec(parts.back(), "out"));
  ASSERT_TRUE(result.ok()) << result.status();
  const nlohmann::json index = nlohmann::json::parse(ReadFile(dir_.path() + "/out/llama-Q8_0.chunks.json"));
  EXPECT_EQ(index["chunks"][0]["file"], "llama-Q8_0-chunk1-of-2.gguf");
  ExpectChunksHoldTheInput(parts.front(), index, dir_.path() + "/out");
  // A chunk is a model file of its own, not a part of a split.
  absl::StatusOr<ModelView> chunk = OpenModel(*router_.Resolve(dir_.path() + "/out/llama-Q8_0-chunk1-of-2.gguf"));
  ASSERT_TRUE(chunk.ok()) << chunk.status();
  EXPECT_EQ(chunk->gguf->Find("split.count"), nullptr);
}

TEST_F(BisectJobTest, CancelledJobLeavesNothingBehind) {
  const std::string input = WriteLlama("in", 4, 64, 128);
  RecordingContext stopping;
  stopping.StopAfterProgressReports(2);
  absl::StatusOr<v1::JobResult> result = Run(Spec(input, "out"), stopping);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(!fs::exists(dir_.path() + "/out") || FileNames(dir_.path() + "/out").empty());
}

}  // namespace
}  // namespace modelsmith
