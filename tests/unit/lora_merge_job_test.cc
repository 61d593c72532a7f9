// The LoRA merge job in-process: each key style merged into a generated base and checked against
// the update computed here in double, byte-identical untouched tensors and headers, sharded and
// GGUF (float and requantized) bases, the unmatched-key report, partial merges, several adapters,
// policy DEQUANTIZE (GGUF and the safetensors layouts), torch bases merged in place with their
// zip checksums, the base directory's other files, cancellation and the refusals of what is not
// built.
#include "workers/jobs/lora_merge/lora_merge_job.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "tests/support/read_file.h"
#include "tests/support/checkpoint_files.h"
#include "tests/support/recording_context.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "tests/support/torch_file.h"
#include "workers/common/error.h"
#include "workers/formats/model_view.h"
#include "workers/formats/tensor_reader.h"
#include "workers/jobs/convert/gguf_to_hf.h"
#include "workers/jobs/job_kinds.h"
#include "workers/formats/quantized_weight_reader.h"
#include "workers/quant/cast.h"
#include "workers/quant/quantize_rows.h"
#include "workers/tensor/ggml_types.h"

namespace modelsmith {
namespace {

namespace fs = std::filesystem;

std::string GoldenGguf(const std::string& name) {
  return std::string(MODELSMITH_SOURCE_DIR) + "/tests/data/golden/gguf/" + name;
}

struct FloatTensor {
  std::string name;
  std::vector<uint64_t> shape;
  std::vector<float> values;  // written as F32
};

// Random values (seeded by the name) of the given shape.
FloatTensor Random(const std::string& name, std::vector<uint64_t> shape, float sd = 0.1f) {
  FloatTensor t{name, shape, {}};
  std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(name)));
  std::normal_distribution<float> normal(0.0f, sd);
  for (uint64_t i = 0; i < *ElementCount(shape); ++i) t.values.push_back(normal(rng));
  return t;
}

void WriteFloats(const std::string& path, const std::vector<FloatTensor>& tensors) {
  std::vector<SafetensorsEntry> entries;
  for (const FloatTensor& t : tensors) entries.push_back({t.name, DType::kF32, t.shape, t.values.size() * 4});
  std::ofstream out(path, std::ios::binary);
  out << SerializeSafetensorsHeader(entries, {});
  for (const FloatTensor& t : tensors) out.write(reinterpret_cast<const char*>(t.values.data()), t.values.size() * 4);
}

// delta[o, c] = scale * sum_k up[o, k] * down[k, c], in double.
std::vector<double> Delta(const FloatTensor& up, const FloatTensor& down, double scale) {
  const uint64_t out = up.shape[0], rank = down.shape[0];
  const uint64_t cols = down.values.size() / rank;
  std::vector<double> d(out * cols);
  for (uint64_t o = 0; o < out; ++o) {
    for (uint64_t c = 0; c < cols; ++c) {
      double sum = 0;
      for (uint64_t k = 0; k < rank; ++k)
        sum += static_cast<double>(up.values[o * rank + k]) * down.values[k * cols + c];
      d[o * cols + c] = scale * sum;
    }
  }
  return d;
}

class LoraMergeJobTest : public ::testing::Test {
 protected:
  absl::StatusOr<v1::JobResult> Run(const v1::LoraMergeSpec& spec) {
    JobRun run;
    run.job_id = "job-test";
    *run.spec.mutable_lora_merge() = spec;
    run.router = &router_;
    if (absl::StatusOr<uint64_t> preflight = PreflightJob(run.spec, router_); !preflight.ok())
      return preflight.status();
    return RunJob(run, context_);
  }
  v1::LoraMergeSpec Spec(const std::string& base, const std::vector<std::string>& adapters, const std::string& output) {
    v1::LoraMergeSpec spec;
    spec.set_base(base);
    for (const std::string& a : adapters) spec.add_adapters()->set_uri(a);
    spec.set_output(output);
    return spec;
  }
  // A tensor of a model as F32 values (any float or GGUF type).
  std::vector<float> Values(const std::string& model, const std::string& name) {
    absl::StatusOr<Location> location = router_.Resolve(model);
    EXPECT_TRUE(location.ok()) << location.status();
    absl::StatusOr<ModelView> view = OpenModel(*location);
    EXPECT_TRUE(view.ok()) << view.status();
    for (const TensorInfo& t : view->tensors) {
      if (t.name != name) continue;
      std::vector<std::byte> raw(t.size_bytes);
      EXPECT_TRUE(view->files[t.file_index].object->ReadAt(t.data_offset, t.size_bytes, raw.data()).ok());
      std::vector<float> v(*ElementCount(t.shape));
      if (t.ggml_type) {
        DecodeRows(static_cast<GgmlType>(*t.ggml_type), reinterpret_cast<const uint8_t*>(raw.data()),
                   v.size() / t.shape.back(), t.shape.back(), v.data());
      } else {
        CastCounts ignored;
        CastElements(t.dtype, DType::kF32, raw.data(), v.size(), reinterpret_cast<std::byte*>(v.data()), &ignored);
      }
      return v;
    }
    ADD_FAILURE() << "no tensor " << name << " in " << model;
    return {};
  }
  std::vector<std::string> Codes() {
    std::vector<std::string> codes;
    for (const auto& [code, tensor] : context_.warnings()) codes.push_back(code);
    return codes;
  }
  // A PEFT adapter directory with q_proj and v_proj modules of block 0 (rank 4, alpha 8).
  std::string PeftAdapter(const std::string& name, uint64_t hidden, std::vector<FloatTensor>* written,
                          const std::vector<std::string>& modules = {"self_attn.q_proj", "self_attn.v_proj"}) {
    const std::string dir = dir_.path() + "/" + name;
    fs::create_directories(dir);
    for (const std::string& m : modules) {
      const std::string prefix = "base_model.model.model.layers.0." + m;
      written->push_back(Random(prefix + ".lora_A.weight", {4, hidden}));
      written->push_back(Random(prefix + ".lora_B.weight", {hidden, 4}));
    }
    WriteFloats(dir + "/adapter_model.safetensors", *written);
    std::ofstream(dir + "/adapter_config.json")
        << R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})";
    return dir;
  }

  TempDir dir_;
  StorageRouter router_{{}};
  RecordingContext context_;
};

TEST_F(LoraMergeJobTest, PeftAdapterIntoF16BaseChangesOnlyItsTargets) {
  const std::string base_dir = dir_.path() + "/base";
  fs::create_directories(base_dir);
  const std::map<std::string, std::vector<float>> base =
      WriteFloatCheckpoint(base_dir + "/model.safetensors", LlamaLikeTensors(2, 32, 64));
  std::ofstream(base_dir + "/config.json") << R"({"architectures": ["LlamaForCausalLM"]})";
  // The directory's other files come along, but not another model's weights or subdirectories.
  std::ofstream(base_dir + "/tokenizer.json") << R"({"model": {"type": "BPE"}})";
  std::ofstream(base_dir + "/other-model.gguf") << "GGUF";
  fs::create_directories(base_dir + "/checkpoint-100");
  std::ofstream(base_dir + "/checkpoint-100/trainer_state.json") << "{}";
  std::vector<FloatTensor> adapter;
  const std::string adapter_dir = PeftAdapter("peft", 32, &adapter);

  absl::StatusOr<v1::JobResult> result = Run(Spec(base_dir, {adapter_dir}, dir_.path() + "/out"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(ReadFile(base_dir + "/tokenizer.json"), ReadFile(dir_.path() + "/out/tokenizer.json"));
  EXPECT_FALSE(fs::exists(dir_.path() + "/out/other-model.gguf"));
  EXPECT_FALSE(fs::exists(dir_.path() + "/out/checkpoint-100"));
  EXPECT_EQ(result->figures().lora_merge().files_copied(), 2u);  // config.json, tokenizer.json
  const std::string out = dir_.path() + "/out/model.safetensors";
  const std::string in_bytes = ReadFile(base_dir + "/model.safetensors"), out_bytes = ReadFile(out);
  ASSERT_EQ(in_bytes.size(), out_bytes.size());
  uint64_t header = 0;
  std::memcpy(&header, in_bytes.data(), 8);
  EXPECT_EQ(in_bytes.substr(0, 8 + header), out_bytes.substr(0, 8 + header)) << "the header is copied unchanged";
  EXPECT_EQ(ReadFile(base_dir + "/config.json"), ReadFile(dir_.path() + "/out/config.json"));

  for (const char* proj : {"q_proj", "v_proj"}) {
    const std::string name = std::string("model.layers.0.self_attn.") + proj + ".weight";
    const std::string prefix = std::string("base_model.model.model.layers.0.self_attn.") + proj;
    const FloatTensor* a = nullptr;
    const FloatTensor* b = nullptr;
    for (const FloatTensor& t : adapter) {
      if (t.name == prefix + ".lora_A.weight") a = &t;
      if (t.name == prefix + ".lora_B.weight") b = &t;
    }
    const std::vector<double> delta = Delta(*b, *a, 8.0 / 4.0);
    const std::vector<float> got = Values(out, name);
    const std::vector<float>& w = base.at(name);
    ASSERT_EQ(got.size(), w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      const double exact = w[i] + delta[i];
      // F16 keeps 11 significant bits: the result is the exact merge rounded once (or, for a value
      // within float error of a rounding boundary, its neighbour).
      EXPECT_NEAR(got[i], exact, std::fabs(exact) * std::ldexp(1.0, -11) * 1.01 + 1e-7) << name << " element " << i;
    }
  }
  // Every other tensor is byte for byte the base's.
  absl::StatusOr<Location> in_location = router_.Resolve(base_dir);
  absl::StatusOr<ModelView> in_view = OpenModel(*in_location);
  ASSERT_TRUE(in_view.ok());
  for (const TensorInfo& t : in_view->tensors) {
    if (absl::StrContains(t.name, "layers.0.self_attn.q_proj") ||
        absl::StrContains(t.name, "layers.0.self_attn.v_proj"))
      continue;
    EXPECT_EQ(in_bytes.substr(t.data_offset, t.size_bytes), out_bytes.substr(t.data_offset, t.size_bytes)) << t.name;
  }
  const v1::LoraMergeFigures& f = result->figures().lora_merge();
  EXPECT_EQ(f.adapters(), 1u);
  EXPECT_EQ(f.modules_matched(), 2u);
  EXPECT_EQ(f.tensors_merged(), 2u);
  EXPECT_EQ(f.tensors_copied(), in_view->tensors.size() - 2);
  ASSERT_EQ(f.largest_updates_size(), 2);
  EXPECT_GT(f.largest_updates(0).relative_update(), 0.1);  // B @ A of sd 0.1 entries against weights of sd 0.02
  EXPECT_GT(f.largest_updates(0).snr_db(), 60);            // F16 rounding only
  const nlohmann::json manifest = nlohmann::json::parse(ReadFile(dir_.path() + "/out/modelsmith.manifest.json"));
  EXPECT_EQ(manifest["kind"], "lora_merge");
  EXPECT_EQ(manifest["lora_merge"]["adapters"][0]["style"], "peft");
  EXPECT_EQ(manifest["lora_merge"]["merged"].size(), 2u);
  EXPECT_TRUE(Codes().empty());
}

// A UNet-like sharded F32 base and a kohya adapter with a 3x3 conv, a 1x1 conv and a linear
// module, resolved from their flattened names.
TEST_F(LoraMergeJobTest, KohyaAdapterIntoShardedBaseWithConvolutions) {
  const std::string base_dir = dir_.path() + "/unet";
  fs::create_directories(base_dir);
  const std::vector<FloatTensor> shard1 = {Random("down_blocks.0.resnets.0.conv1.weight", {8, 4, 3, 3}),
                                           Random("down_blocks.0.resnets.0.conv1.bias", {8})};
  const std::vector<FloatTensor> shard2 = {
      Random("down_blocks.0.attentions.0.proj_in.weight", {8, 8, 1, 1}),
      Random("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", {8, 8})};
  WriteFloats(base_dir + "/diffusion_pytorch_model-00001-of-00002.safetensors", shard1);
  WriteFloats(base_dir + "/diffusion_pytorch_model-00002-of-00002.safetensors", shard2);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (const FloatTensor& t : shard1)
    index["weight_map"][t.name] = "diffusion_pytorch_model-00001-of-00002.safetensors";
  for (const FloatTensor& t : shard2)
    index["weight_map"][t.name] = "diffusion_pytorch_model-00002-of-00002.safetensors";
  std::ofstream(base_dir + "/diffusion_pytorch_model.safetensors.index.json") << index.dump();

  std::vector<FloatTensor> adapter = {
      Random("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", {2, 4, 3, 3}),
      Random("lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", {8, 2, 1, 1}),
      FloatTensor{"lora_unet_down_blocks_0_resnets_0_conv1.alpha", {}, {1.0f}},
      Random("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", {2, 8, 1, 1}),
      Random("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight", {8, 2, 1, 1}),
      Random("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight", {2, 8}),
      Random("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight", {8, 2}),
      FloatTensor{"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha",
                  {},
                  {0.0f}},  // 0 means alpha = r
  };
  WriteFloats(dir_.path() + "/kohya.safetensors", adapter);
  v1::LoraMergeSpec spec = Spec(base_dir, {dir_.path() + "/kohya.safetensors"}, dir_.path() + "/merged");
  spec.mutable_adapters(0)->set_strength(0.5);
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->figures().lora_merge().tensors_merged(), 3u);
  EXPECT_EQ(ReadFile(base_dir + "/diffusion_pytorch_model.safetensors.index.json"),
            ReadFile(dir_.path() + "/merged/diffusion_pytorch_model.safetensors.index.json"));

  struct Case {
    const char* base;
    size_t down, up;
    double scale;  // alpha / r times the strength
  };
  for (const Case& c :
       {Case{"down_blocks.0.resnets.0.conv1.weight", 0, 1, 1.0 / 2 * 0.5},
        Case{"down_blocks.0.attentions.0.proj_in.weight", 3, 4, 1.0 * 0.5},  // no alpha tensor: alpha = r
        Case{"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", 5, 6, 1.0 * 0.5}}) {
    const std::vector<double> delta = Delta(adapter[c.up], adapter[c.down], c.scale);
    const std::vector<float> got = Values(dir_.path() + "/merged", c.base);
    const std::vector<float> w = Values(base_dir, c.base);
    ASSERT_EQ(got.size(), delta.size()) << c.base;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], w[i] + delta[i], 1e-6) << c.base << " element " << i;
  }
  // The untouched shard tensor, byte for byte.
  EXPECT_EQ(Values(dir_.path() + "/merged", "down_blocks.0.resnets.0.conv1.bias"),
            Values(base_dir, "down_blocks.0.resnets.0.conv1.bias"));
}

// A grouped convolution (2 groups of 2 input channels, 3x3) with a grouped adapter (A over the
// group's channels, B [out, r / 2] as PEFT makes lora_B for groups), and a depthwise 1x1 one;
// each compared with the block-diagonal update computed here. An adapter whose A reads every
// input channel of a grouped base (PEFT's layout) cannot be merged, and the report says why.
TEST_F(LoraMergeJobTest, GroupedConvolutionsMergeBlockDiagonalUpdates) {
  const FloatTensor grouped = Random("conv.weight", {8, 2, 3, 3}, 0.05f);
  const FloatTensor depthwise = Random("dw.weight", {4, 1, 1, 1}, 0.05f);
  WriteFloats(dir_.path() + "/base.safetensors", {grouped, depthwise});
  const FloatTensor a = Random("conv.lora.down.weight", {4, 2, 3, 3}), b = Random("conv.lora.up.weight", {8, 2, 1, 1});
  const FloatTensor dw_a = Random("dw.lora.down.weight", {4, 1, 1, 1}),
                    dw_b = Random("dw.lora.up.weight", {4, 1, 1, 1});
  WriteFloats(dir_.path() + "/grouped.safetensors", {a, b, dw_a, dw_b});
  absl::StatusOr<v1::JobResult> result =
      Run(Spec(dir_.path() + "/base.safetensors", {dir_.path() + "/grouped.safetensors"}, dir_.path() + "/out"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->figures().lora_merge().tensors_merged(), 2u);

  // delta[o, c] = scale * sum_j B[o, j] * A[g * r/G + j, c], g the group of output o.
  auto expected = [](const FloatTensor& w, const FloatTensor& down, const FloatTensor& up, uint64_t groups) {
    const uint64_t out = w.shape[0], cols = w.values.size() / out, rank = down.shape[0], per_group = rank / groups;
    const double scale = 1.0;  // no alpha: alpha = r
    std::vector<double> merged(w.values.begin(), w.values.end());
    for (uint64_t o = 0; o < out; ++o) {
      const uint64_t g = o / (out / groups);
      for (uint64_t c = 0; c < cols; ++c) {
        double sum = 0;
        for (uint64_t j = 0; j < per_group; ++j)
          sum += double(up.values[o * per_group + j]) * down.values[(g * per_group + j) * cols + c];
        merged[o * cols + c] += scale * sum;
      }
    }
    return merged;
  };
  for (const auto& [w, down, up, groups] :
       {std::make_tuple(&grouped, &a, &b, 2), std::make_tuple(&depthwise, &dw_a, &dw_b, 4)}) {
    const std::vector<double> want = expected(*w, *down, *up, groups);
    const std::vector<float> got = Values(dir_.path() + "/out", w->name);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << w->name << " " << i;
  }

  // PEFT's layout for a grouped base: A [r, all 4 input channels, 3, 3].
  WriteFloats(dir_.path() + "/dense-a.safetensors", {Random("conv.lora.down.weight", {4, 4, 3, 3}), b});
  absl::StatusOr<v1::JobResult> refused =
      Run(Spec(dir_.path() + "/base.safetensors", {dir_.path() + "/dense-a.safetensors"}, dir_.path() + "/out2"));
  EXPECT_EQ(ReasonOf(refused.status()), "LORA_KEYS_UNMATCHED") << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "not block-diagonal")) << refused.status();
}

// A PEFT DoRA adapter on a linear weight: W' = m / ||V|| * V row by row, V = W + scale * B @ A.
TEST_F(LoraMergeJobTest, DoraMagnitudesRescaleEachMergedRow) {
  const FloatTensor w = Random("model.layers.0.mlp.up_proj.weight", {6, 5}, 0.1f);
  WriteFloats(dir_.path() + "/base.safetensors", {w});
  const std::string adapter_dir = dir_.path() + "/dora";
  fs::create_directories(adapter_dir);
  const FloatTensor a = Random("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", {2, 5});
  const FloatTensor b = Random("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", {6, 2});
  FloatTensor m = Random("base_model.model.model.layers.0.mlp.up_proj.lora_magnitude_vector", {6}, 0.1f);
  for (float& v : m.values) v = std::fabs(v) + 0.2f;
  WriteFloats(adapter_dir + "/adapter_model.safetensors", {a, b, m});
  std::ofstream(adapter_dir + "/adapter_config.json")
      << R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "use_dora": true})";
  absl::StatusOr<v1::JobResult> result =
      Run(Spec(dir_.path() + "/base.safetensors", {adapter_dir}, dir_.path() + "/out"));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::vector<double> delta = Delta(b, a, 4.0 / 2.0);
  const std::vector<float> got = Values(dir_.path() + "/out", w.name);
  for (uint64_t o = 0; o < 6; ++o) {
    double norm = 0;
    for (uint64_t c = 0; c < 5; ++c) norm += std::pow(w.values[o * 5 + c] + delta[o * 5 + c], 2);
    norm = std::sqrt(norm);
    for (uint64_t c = 0; c < 5; ++c) {
      const double want = m.values[o] / norm * (w.values[o * 5 + c] + delta[o * 5 + c]);
      EXPECT_NEAR(got[o * 5 + c], want, 1e-6) << o << ", " << c;
    }
  }
}

TEST_F(LoraMergeJobTest, UnmatchedKeysFailWithTheClosestNamesUnlessPartialIsAllowed) {
  const std::string base_dir = dir_.path() + "/base";
  fs::create_directories(base_dir);
  WriteFloatCheckpoint(base_dir + "/model.safetensors", LlamaLikeTensors(1, 16, 32));
  std::vector<FloatTensor> adapter;
  const std::string adapter_dir = PeftAdapter("peft", 16, &adapter, {"self_attn.q_proj", "self_attn.qq_proj"});

  absl::StatusOr<v1::JobResult> refused = Run(Spec(base_dir, {adapter_dir}, dir_.path() + "/out"));
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_EQ(ReasonOf(refused.status()), "LORA_KEYS_UNMATCHED");
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "qq_proj")) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "closest: model.layers.0.self_attn.q_proj.weight"))
      << refused.status();
  EXPECT_FALSE(fs::exists(dir_.path() + "/out/model.safetensors"));

  v1::LoraMergeSpec spec = Spec(base_dir, {adapter_dir}, dir_.path() + "/out");
  spec.set_allow_partial(true);
  absl::StatusOr<v1::JobResult> partial = Run(spec);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ(partial->figures().lora_merge().modules_matched(), 1u);
  EXPECT_EQ(partial->figures().lora_merge().modules_skipped(), 1u);
  ASSERT_EQ(context_.warnings().size(), 1u);
  EXPECT_EQ(context_.warnings()[0].first, "LORA_KEY_SKIPPED");
  EXPECT_EQ(context_.warnings()[0].second, "base_model.model.model.layers.0.self_attn.qq_proj");
  const nlohmann::json manifest = nlohmann::json::parse(ReadFile(dir_.path() + "/out/modelsmith.manifest.json"));
  EXPECT_EQ(manifest["lora_merge"]["skipped"].size(), 1u);
}

TEST_F(LoraMergeJobTest, SeveralAdaptersApplyInOrderWithTheirStrengths) {
  const std::string base = dir_.path() + "/base.safetensors";
  const FloatTensor w = Random("layer.weight", {6, 5}, 0.02f);
  WriteFloats(base, {w, Random("layer.bias", {6})});
  const std::vector<FloatTensor> first = {Random("lora_unet_layer.lora_down.weight", {2, 5}),
                                          Random("lora_unet_layer.lora_up.weight", {6, 2})};
  // diffusers-legacy keys with a separate alpha.
  const std::vector<FloatTensor> second = {Random("layer.lora.down.weight", {3, 5}),
                                           Random("layer.lora.up.weight", {6, 3}),
                                           FloatTensor{"layer.alpha", {}, {6.0f}}};
  WriteFloats(dir_.path() + "/first.safetensors", first);
  WriteFloats(dir_.path() + "/second.safetensors", second);
  // A bare file is read as a single-file model: the output goes to a directory.
  v1::LoraMergeSpec spec =
      Spec(base, {dir_.path() + "/first.safetensors", dir_.path() + "/second.safetensors"}, dir_.path() + "/out");
  spec.mutable_adapters(0)->set_strength(-1.0);
  spec.mutable_adapters(1)->set_strength(0.25);
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->figures().lora_merge().tensors_merged(), 1u);
  EXPECT_EQ(result->figures().lora_merge().modules_matched(), 2u);
  const std::vector<double> d1 = Delta(first[1], first[0], 1.0 * -1.0);
  const std::vector<double> d2 = Delta(second[1], second[0], 6.0 / 3.0 * 0.25);
  const std::vector<float> got = Values(dir_.path() + "/out", "layer.weight");
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], w.values[i] + d1[i] + d2[i], 1e-6) << i;
}

// The golden llama GGUF (F32 and Q8_0): the adapter's Hugging Face names reach the GGUF tensors,
// the Q rows follow llama.cpp's permutation, and a Q8_0 base is requantized with a warning.
TEST_F(LoraMergeJobTest, GgufBasesTakeHuggingFaceNamedAdaptersAndRequantize) {
  std::vector<FloatTensor> adapter;
  const std::string adapter_dir = PeftAdapter("peft", 256, &adapter, {"self_attn.q_proj", "mlp.down_proj"});
  // down_proj is [hidden, ffn]: give it A of [4, 512].
  adapter[2] = Random("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight", {4, 512});
  WriteFloats(adapter_dir + "/adapter_model.safetensors", adapter);

  absl::StatusOr<v1::JobResult> result =
      Run(Spec(GoldenGguf("input-f32.gguf"), {adapter_dir}, dir_.path() + "/f32.gguf"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->figures().lora_merge().tensors_merged(), 2u);
  EXPECT_TRUE(Codes().empty());
  const std::string in_bytes = ReadFile(GoldenGguf("input-f32.gguf")), out_bytes = ReadFile(dir_.path() + "/f32.gguf");
  ASSERT_EQ(in_bytes.size(), out_bytes.size());

  absl::StatusOr<Location> location = router_.Resolve(GoldenGguf("input-f32.gguf"));
  absl::StatusOr<ModelView> view = OpenModel(*location);
  ASSERT_TRUE(view.ok());
  uint64_t heads = 0;
  for (const GgufKv& kv : view->gguf->kvs) {
    if (kv.key == "llama.attention.head_count") heads = kv.AsUnsigned().value_or(0);
  }
  absl::StatusOr<std::vector<uint64_t>> row_source = UnpermuteRows(256, heads);
  ASSERT_TRUE(row_source.ok());
  const std::vector<double> dq = Delta(adapter[1], adapter[0], 2.0);
  const std::vector<float> wq = Values(GoldenGguf("input-f32.gguf"), "blk.0.attn_q.weight");
  const std::vector<float> gq = Values(dir_.path() + "/f32.gguf", "blk.0.attn_q.weight");
  for (uint64_t r = 0; r < 256; ++r) {
    const uint64_t stored = (*row_source)[r];  // Hugging Face row r is GGUF row `stored`
    for (uint64_t c = 0; c < 256; ++c) {
      const double exact = wq[stored * 256 + c] + dq[r * 256 + c];
      ASSERT_NEAR(gq[stored * 256 + c], exact, std::fabs(exact) * 1e-6 + 1e-6) << "row " << r << " col " << c;
    }
  }
  for (const TensorInfo& t : view->tensors) {
    if (t.name == "blk.0.attn_q.weight" || t.name == "blk.0.ffn_down.weight") continue;
    EXPECT_EQ(in_bytes.substr(t.data_offset, t.size_bytes), out_bytes.substr(t.data_offset, t.size_bytes)) << t.name;
  }

  absl::StatusOr<v1::JobResult> q8 =
      Run(Spec(GoldenGguf("expected-Q8_0.gguf"), {adapter_dir}, dir_.path() + "/q8.gguf"));
  ASSERT_TRUE(q8.ok()) << q8.status();
  EXPECT_EQ(Codes(), std::vector<std::string>{"LORA_REQUANTIZED"});
  const v1::LoraMergeFigures& f = q8->figures().lora_merge();
  EXPECT_EQ(f.tensors_requantized(), 2u);
  EXPECT_GT(f.min_snr_db(), 30);  // Q8_0's rounding of the merged weight
  EXPECT_LT(f.min_snr_db(), 80);
  // Requantized in Q8_0 from the exact merge: what a Q8_0 encoder makes of it.
  const std::vector<float> q8_base = Values(GoldenGguf("expected-Q8_0.gguf"), "blk.0.attn_q.weight");
  std::vector<float> merged(q8_base.size());
  for (uint64_t r = 0; r < 256; ++r) {
    for (uint64_t c = 0; c < 256; ++c) {
      merged[(*row_source)[r] * 256 + c] = static_cast<float>(q8_base[(*row_source)[r] * 256 + c] + dq[r * 256 + c]);
    }
  }
  std::vector<uint8_t> encoded(*GgmlRowBytes(GgmlType::kQ8_0, 256) * 256);
  EncodeRows(GgmlType::kQ8_0, merged.data(), 256, 256, encoded.data());
  std::vector<float> expected(merged.size());
  DecodeRows(GgmlType::kQ8_0, encoded.data(), 256, 256, expected.data());
  const std::vector<float> got = Values(dir_.path() + "/q8.gguf", "blk.0.attn_q.weight");
  size_t differing = 0;
  for (size_t i = 0; i < got.size(); ++i) differing += got[i] != expected[i];
  // The job adds the update in float, this test in double: a block's scale may differ by an ulp.
  EXPECT_LT(differing, got.size() / 100);
}

TEST_F(LoraMergeJobTest, CancelledJobLeavesNoOutput) {
  const std::string base_dir = dir_.path() + "/base";
  fs::create_directories(base_dir);
  WriteFloatCheckpoint(base_dir + "/model.safetensors", LlamaLikeTensors(2, 32, 64));
  std::vector<FloatTensor> adapter;
  const std::string adapter_dir = PeftAdapter("peft", 32, &adapter);
  context_.StopAfterProgressReports(2);
  absl::StatusOr<v1::JobResult> result = Run(Spec(base_dir, {adapter_dir}, dir_.path() + "/out"));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_FALSE(fs::exists(dir_.path() + "/out/model.safetensors"));
  EXPECT_FALSE(fs::exists(dir_.path() + "/out/modelsmith.manifest.json"));
}

TEST_F(LoraMergeJobTest, RefusalsNameTheFieldAndWhatIsNotBuilt) {
  const std::string base_dir = dir_.path() + "/base";
  fs::create_directories(base_dir);
  WriteFloatCheckpoint(base_dir + "/model.safetensors", LlamaLikeTensors(1, 16, 32));
  std::vector<FloatTensor> adapter;
  const std::string adapter_dir = PeftAdapter("peft", 16, &adapter);

  absl::StatusOr<v1::JobResult> r = Run(Spec(base_dir, {}, dir_.path() + "/out"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ContextOf(r.status())["field"], "lora_merge.adapters");
  r = Run(Spec(base_dir, {adapter_dir}, dir_.path() + "/out.safetensors"));
  EXPECT_EQ(ReasonOf(r.status()), "INVALID_OUTPUT");
  r = Run(Spec(base_dir, {adapter_dir}, base_dir));
  EXPECT_EQ(ReasonOf(r.status()), "OUTPUT_OVERLAPS_INPUT");
  r = Run(Spec(base_dir, {dir_.path() + "/missing"}, dir_.path() + "/out"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
  EXPECT_EQ(ContextOf(r.status())["field"], "lora_merge.adapters[0]");
  // The base itself is not an adapter.
  r = Run(Spec(base_dir, {base_dir}, dir_.path() + "/out"));
  EXPECT_EQ(ReasonOf(r.status()), "LORA_NOT_AN_ADAPTER") << r.status();

  r = Run([&] {
    v1::LoraMergeSpec spec = Spec(base_dir, {adapter_dir}, dir_.path() + "/out");
    spec.set_dequantize_dtype("f16");  // without policy DEQUANTIZE
    return spec;
  }());
  EXPECT_EQ(ContextOf(r.status())["field"], "lora_merge.dequantize_dtype") << r.status();
  r = Run([&] {
    v1::LoraMergeSpec spec = Spec(base_dir, {adapter_dir}, dir_.path() + "/out");
    spec.set_policy(v1::QUANTIZED_BASE_POLICY_DEQUANTIZE);
    spec.set_dequantize_dtype("int8");
    return spec;
  }());
  EXPECT_EQ(ContextOf(r.status())["field"], "lora_merge.dequantize_dtype") << r.status();

  // A quanto qfloat8 weight cannot be requantized yet, and says so (policy dequantize takes it).
  const std::string qfloat8_dir = dir_.path() + "/qfloat8";
  fs::create_directories(qfloat8_dir);
  WriteCheckpoint(qfloat8_dir + "/model.safetensors",
                  {{"model.layers.0.self_attn.q_proj.weight._data", DType::kF8E4M3, {16, 16}},
                   {"model.layers.0.self_attn.q_proj.weight._scale", DType::kF16, {16, 1}},
                   {"model.layers.0.self_attn.v_proj.weight", DType::kF16, {16, 16}}});
  r = Run(Spec(qfloat8_dir, {adapter_dir}, dir_.path() + "/out"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnimplemented) << r.status();
  EXPECT_EQ(ReasonOf(r.status()), "LORA_QUANTIZED_BASE_NOT_IMPLEMENTED");
  EXPECT_EQ(ContextOf(r.status())["tensor"], "model.layers.0.self_attn.q_proj.weight");
}

// A bare F8_E4M3 weight is merged like a float one and rounded back to fp8, with the policy's
// warning; its F16 neighbour is merged in F16.
TEST_F(LoraMergeJobTest, Fp8WeightIsMergedAndRoundedBackToFp8) {
  const FloatTensor q = Random("model.layers.0.self_attn.q_proj.weight", {16, 16}, 0.2f);
  std::string fp8(256, '\0');
  CastCounts counts;
  CastElements(DType::kF32, DType::kF8E4M3, reinterpret_cast<const std::byte*>(q.values.data()), 256,
               reinterpret_cast<std::byte*>(fp8.data()), &counts);
  const std::string base_dir = dir_.path() + "/fp8";
  fs::create_directories(base_dir);
  {
    const std::vector<SafetensorsEntry> entries = {
        {q.name, DType::kF8E4M3, {16, 16}, 256},
        {"model.layers.0.self_attn.v_proj.weight", DType::kF32, {16, 16}, 1024}};
    std::ofstream out(base_dir + "/model.safetensors", std::ios::binary);
    out << SerializeSafetensorsHeader(entries, {}) << fp8;
    const FloatTensor v = Random("model.layers.0.self_attn.v_proj.weight", {16, 16});
    out.write(reinterpret_cast<const char*>(v.values.data()), 1024);
  }
  std::vector<FloatTensor> adapter;
  const std::string adapter_dir = PeftAdapter("peft", 16, &adapter);
  absl::StatusOr<v1::JobResult> result = Run(Spec(base_dir, {adapter_dir}, dir_.path() + "/out"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(Codes(), std::vector<std::string>{"LORA_REQUANTIZED"});
  EXPECT_EQ(result->figures().lora_merge().tensors_requantized(), 1u);
  const std::vector<double> delta = Delta(adapter[1], adapter[0], 2.0);
  const std::vector<float> w = Values(base_dir, q.name), got = Values(dir_.path() + "/out", q.name);
  ASSERT_EQ(got.size(), 256u);
  for (size_t i = 0; i < got.size(); ++i) {
    const double exact = w[i] + delta[i];
    // E4M3 keeps 4 significant bits; below 2^-6 it is subnormal with steps of 2^-9.
    EXPECT_NEAR(got[i], exact, std::fabs(exact) * std::ldexp(1.0, -4) * 1.01 + std::ldexp(1.0, -10)) << i;
  }
}

// A Q8_0 GGUF with policy DEQUANTIZE: the merged weights are written as BF16 under a new
// tensor table; every other tensor keeps its type and bytes.
TEST_F(LoraMergeJobTest, GgufDequantizePolicyWritesMergedWeightsAsFloats) {
  std::vector<FloatTensor> adapter;
  const std::string adapter_dir = PeftAdapter("peft", 256, &adapter, {"self_attn.v_proj"});
  v1::LoraMergeSpec spec = Spec(GoldenGguf("expected-Q8_0.gguf"), {adapter_dir}, dir_.path() + "/bf16.gguf");
  spec.set_policy(v1::QUANTIZED_BASE_POLICY_DEQUANTIZE);
  spec.set_dequantize_dtype("bf16");
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(Codes(), std::vector<std::string>{"LORA_DEQUANTIZED"});
  const v1::LoraMergeFigures& f = result->figures().lora_merge();
  EXPECT_EQ(f.tensors_dequantized(), 1u);
  EXPECT_EQ(f.tensors_requantized(), 0u);
  EXPECT_EQ(f.largest_updates(0).type(), "BF16");

  absl::StatusOr<ModelView> in = OpenModel(*router_.Resolve(GoldenGguf("expected-Q8_0.gguf")));
  absl::StatusOr<ModelView> out = OpenModel(*router_.Resolve(dir_.path() + "/bf16.gguf"));
  ASSERT_TRUE(in.ok() && out.ok()) << out.status();
  ASSERT_EQ(in->tensors.size(), out->tensors.size());
  EXPECT_EQ(in->gguf->kvs.size(), out->gguf->kvs.size());
  for (size_t i = 0; i < in->tensors.size(); ++i) {
    const TensorInfo& a = in->tensors[i];
    const TensorInfo& b = out->tensors[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.shape, b.shape);
    if (a.name == "blk.0.attn_v.weight") {
      EXPECT_EQ(*b.ggml_type, static_cast<uint32_t>(GgmlType::kBF16));
      continue;
    }
    EXPECT_EQ(a.ggml_type, b.ggml_type) << a.name;
    EXPECT_EQ(Values(GoldenGguf("expected-Q8_0.gguf"), a.name), Values(dir_.path() + "/bf16.gguf", b.name)) << a.name;
  }
  // V is not permuted: the exact merge of the Q8_0 weight, rounded to BF16 once.
  const std::vector<double> dv = Delta(adapter[1], adapter[0], 2.0);
  const std::vector<float> w = Values(GoldenGguf("expected-Q8_0.gguf"), "blk.0.attn_v.weight");
  const std::vector<float> got = Values(dir_.path() + "/bf16.gguf", "blk.0.attn_v.weight");
  ASSERT_EQ(w.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const double exact = w[i] + dv[i];
    ASSERT_NEAR(got[i], exact, std::fabs(exact) * std::ldexp(1.0, -8) * 1.01 + 1e-7) << i;
  }
}

// A PEFT adapter (adapter_model.bin) merged into torch.save's own checkpoint
// (tests/data/torch/state_dict.bin, made by torch): the file is mirrored, the merged records get
// their new CRC-32 in every field that holds it, and tensors that share storage with another name
// are refused.
TEST_F(LoraMergeJobTest, TorchBaseIsMergedInPlaceWithNewChecksums) {
  const std::string base_dir = dir_.path() + "/torch";
  fs::create_directories(base_dir);
  const std::string fixture = std::string(MODELSMITH_SOURCE_DIR) + "/tests/data/torch/state_dict.bin";
  fs::copy_file(fixture, base_dir + "/pytorch_model.bin");
  std::ofstream(base_dir + "/config.json") << "{}";
  const std::string adapter_dir = dir_.path() + "/peft";
  fs::create_directories(adapter_dir);
  const std::vector<FloatTensor> adapter = {Random("base_model.model.layers.0.attn.q_proj.lora_A.weight", {2, 4}),
                                            Random("base_model.model.layers.0.attn.q_proj.lora_B.weight", {4, 2}),
                                            Random("base_model.model.layers.0.mlp.up.lora_A.weight", {2, 4}),
                                            Random("base_model.model.layers.0.mlp.up.lora_B.weight", {8, 2})};
  // The adapter as PEFT's adapter_model.bin (torch.save layout), F32.
  std::vector<TorchTensorSpec> specs;
  for (const FloatTensor& t : adapter) specs.push_back({t.name, DType::kF32, t.shape});
  WriteTorchCheckpoint(adapter_dir + "/adapter_model.bin", "archive", specs,
                       [&](size_t i, uint64_t offset, char* data, size_t size) {
                         std::memcpy(data, reinterpret_cast<const char*>(adapter[i].values.data()) + offset, size);
                       });
  std::ofstream(adapter_dir + "/adapter_config.json") << R"({"peft_type": "LORA", "r": 2, "lora_alpha": 2})";

  absl::StatusOr<v1::JobResult> result = Run(Spec(base_dir, {adapter_dir}, dir_.path() + "/out"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->figures().lora_merge().tensors_merged(), 2u);
  const std::string in_bytes = ReadFile(base_dir + "/pytorch_model.bin");
  const std::string out_path = dir_.path() + "/out/pytorch_model.bin";
  const std::string out_bytes = ReadFile(out_path);
  ASSERT_EQ(in_bytes.size(), out_bytes.size());
  struct Case {
    const char* name;
    size_t down, up;
    int bits;  // significant bits of the stored type
  };
  for (const Case& c : {Case{"layers.0.attn.q_proj.weight", 0, 1, 11}, Case{"layers.0.mlp.up.weight", 2, 3, 8}}) {
    const std::vector<double> delta = Delta(adapter[c.up], adapter[c.down], 1.0);
    const std::vector<float> w = Values(base_dir, c.name), got = Values(dir_.path() + "/out", c.name);
    ASSERT_EQ(got.size(), delta.size());
    for (size_t i = 0; i < got.size(); ++i) {
      const double exact = w[i] + delta[i];
      EXPECT_NEAR(got[i], exact, std::fabs(exact) * std::ldexp(1.0, -c.bits) * 1.01 + 1e-7) << c.name << " " << i;
    }
  }
  // The same tensors, aliases and non-tensor entries; the other tensors byte for byte.
  absl::StatusOr<ModelView> in = OpenModel(*router_.Resolve(base_dir));
  absl::StatusOr<ModelView> out = OpenModel(*router_.Resolve(dir_.path() + "/out"));
  ASSERT_TRUE(in.ok() && out.ok()) << out.status();
  ASSERT_EQ(in->tensors.size(), out->tensors.size());
  EXPECT_EQ(in->aliases.size(), out->aliases.size());
  for (const TensorInfo& t : in->tensors) {
    if (t.name == "layers.0.attn.q_proj.weight" || t.name == "layers.0.mlp.up.weight") continue;
    EXPECT_EQ(in_bytes.substr(t.data_offset, t.size_bytes), out_bytes.substr(t.data_offset, t.size_bytes)) << t.name;
  }
  // Every record's CRC-32, checked by Python's zipfile (an independent reader) as it extracts.
  const testing::CommandResult check = testing::RunCommand(
      {"python3", "-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); bad = z.testzip(); sys.exit(bad or 0)",
       out_path});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  EXPECT_EQ(ReadFile(dir_.path() + "/out/config.json"), "{}");

  // proj.weight shares its storage with the view proj_t.weight; embed.weight is tied to lm_head.
  for (const char* module : {"proj", "embed"}) {
    const std::string dir = dir_.path() + "/peft-" + module;
    fs::create_directories(dir);
    const uint64_t rows = std::string(module) == "proj" ? 3 : 6;
    WriteFloats(dir + "/adapter_model.safetensors",
                {Random(std::string("base_model.model.") + module + ".lora_A.weight", {2, 4}),
                 Random(std::string("base_model.model.") + module + ".lora_B.weight", {rows, 2})});
    std::ofstream(dir + "/adapter_config.json") << R"({"peft_type": "LORA", "r": 2, "lora_alpha": 2})";
    absl::StatusOr<v1::JobResult> refused = Run(Spec(base_dir, {dir}, dir_.path() + "/refused"));
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
    EXPECT_EQ(ReasonOf(refused.status()), "LORA_TARGET_SHARED_STORAGE") << refused.status();
    EXPECT_TRUE(absl::StrContains(refused.status().message(),
                                  std::string(module) == "proj" ? "proj_t.weight" : "lm_head.weight"))
        << refused.status();
  }
}

// torch.save's sharded fixture: only the shard holding the target changes; the index and the other
// shard are copied, and the changed shard's CRC-32s check out.
TEST_F(LoraMergeJobTest, ShardedTorchBaseChangesOnlyTheTargetsShard) {
  const std::string base_dir = dir_.path() + "/sharded";
  fs::copy(std::string(MODELSMITH_SOURCE_DIR) + "/tests/data/torch/sharded", base_dir);
  const std::string adapter_dir = dir_.path() + "/peft";
  fs::create_directories(adapter_dir);
  WriteFloats(adapter_dir + "/adapter_model.safetensors",
              {Random("base_model.model.layers.0.attn.q_proj.lora_A.weight", {2, 4}),
               Random("base_model.model.layers.0.attn.q_proj.lora_B.weight", {4, 2})});
  std::ofstream(adapter_dir + "/adapter_config.json") << R"({"peft_type": "LORA", "r": 2, "lora_alpha": 2})";
  absl::StatusOr<v1::JobResult> result = Run(Spec(base_dir, {adapter_dir}, dir_.path() + "/out"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->figures().lora_merge().tensors_merged(), 1u);
  EXPECT_EQ(ReadFile(base_dir + "/pytorch_model.bin.index.json"),
            ReadFile(dir_.path() + "/out/pytorch_model.bin.index.json"));
  EXPECT_EQ(ReadFile(base_dir + "/pytorch_model-00002-of-00002.bin"),
            ReadFile(dir_.path() + "/out/pytorch_model-00002-of-00002.bin"));
  const std::string changed = dir_.path() + "/out/pytorch_model-00001-of-00002.bin";
  EXPECT_NE(ReadFile(base_dir + "/pytorch_model-00001-of-00002.bin"), ReadFile(changed));
  const testing::CommandResult check = testing::RunCommand(
      {"python3", "-c", "import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() or 0)", changed});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

// Every safetensors quantized layout the quantize job writes, merged into: the group is read back
// (a quanto qint4 weight with the shape its adapter module implies, as its checkpoint does not
// record it), merged and quantized again with the base's settings, so the header and every
// untouched tensor stay byte for byte, and the merged weight reads back as the exact merge up to
// the layout's own rounding.
const QuantizedWeightReader* ReaderOf(const RequantizeInputs& inputs, const std::string& weight) {
  for (const auto& r : inputs.readers) {
    if (r->name() == weight) return r.get();
  }
  return nullptr;
}

// quanto qint4 does not record a weight's shape: what the adapter implies, for reading back here.
const std::map<std::string, std::vector<uint64_t>> kHints = {{"model.layers.0.self_attn.q_proj", {64, 64}}};

class LoraMergeLayoutTest : public LoraMergeJobTest,
                            public ::testing::WithParamInterface<std::pair<const char*, double>> {
 protected:
  // A one-block Llama-like F16 model quantized by the quantize job into <dir>/quantized.
  void QuantizeBase(const std::string& scheme) {
    const std::string float_dir = dir_.path() + "/float";
    fs::create_directories(float_dir);
    WriteFloatCheckpoint(float_dir + "/model.safetensors", LlamaLikeTensors(1, 64, 128));
    std::ofstream(float_dir + "/config.json") << R"({"architectures": ["LlamaForCausalLM"]})";
    JobRun quantize;
    quantize.job_id = "quantize";
    quantize.router = &router_;
    v1::QuantizeSpec* q = quantize.spec.mutable_quantize();
    q->set_input(float_dir);
    q->set_output(dir_.path() + "/quantized");
    q->set_scheme(scheme);
    q->set_double_quant(scheme == "bnb_nf4");
    absl::StatusOr<v1::JobResult> result = RunJob(quantize, context_);
    ASSERT_TRUE(result.ok()) << result.status();
  }
  // A PEFT adapter on q_proj and v_proj merged into <dir>/quantized, written to <dir>/merged.
  absl::StatusOr<v1::JobResult> MergeIntoQuantized(v1::QuantizedBasePolicy policy, std::vector<FloatTensor>* adapter,
                                                   RecordingContext& context) {
    const std::string adapter_dir = PeftAdapter("peft", 64, adapter);
    JobRun run;
    run.job_id = "merge";
    run.router = &router_;
    *run.spec.mutable_lora_merge() = Spec(dir_.path() + "/quantized", {adapter_dir}, dir_.path() + "/merged");
    run.spec.mutable_lora_merge()->set_policy(policy);
    return RunJob(run, context);
  }
};

TEST_P(LoraMergeLayoutTest, QuantizedBaseIsRequantizedInItsOwnLayout) {
  const auto [scheme, tolerance] = GetParam();
  ASSERT_NO_FATAL_FAILURE(QuantizeBase(scheme));

  std::vector<FloatTensor> adapter;
  RecordingContext merge_context;
  absl::StatusOr<v1::JobResult> result =
      MergeIntoQuantized(v1::QUANTIZED_BASE_POLICY_REQUANTIZE, &adapter, merge_context);
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::LoraMergeFigures& f = result->figures().lora_merge();
  EXPECT_EQ(f.tensors_merged(), 2u);
  EXPECT_EQ(f.tensors_requantized(), 2u);
  EXPECT_TRUE(std::isfinite(f.min_snr_db()));
  ASSERT_EQ(merge_context.warnings().size(), 1u);
  EXPECT_EQ(merge_context.warnings()[0].first, "LORA_REQUANTIZED");

  const std::string in_bytes = ReadFile(dir_.path() + "/quantized/model.safetensors");
  const std::string out_bytes = ReadFile(dir_.path() + "/merged/model.safetensors");
  ASSERT_EQ(in_bytes.size(), out_bytes.size());
  absl::StatusOr<ModelView> in_view = OpenModel(*router_.Resolve(dir_.path() + "/quantized"));
  absl::StatusOr<ModelView> out_view = OpenModel(*router_.Resolve(dir_.path() + "/merged"));
  ASSERT_TRUE(in_view.ok() && out_view.ok());
  EXPECT_EQ(in_bytes.substr(0, in_view->tensors.front().data_offset),
            out_bytes.substr(0, in_view->tensors.front().data_offset));
  for (const TensorInfo& t : in_view->tensors) {
    if (absl::StrContains(t.name, "layers.0.self_attn.q_proj") ||
        absl::StrContains(t.name, "layers.0.self_attn.v_proj"))
      continue;
    EXPECT_EQ(in_bytes.substr(t.data_offset, t.size_bytes), out_bytes.substr(t.data_offset, t.size_bytes)) << t.name;
  }

  const std::optional<nlohmann::json> config = nlohmann::json::parse(ReadFile(dir_.path() + "/quantized/config.json"));
  absl::StatusOr<RequantizeInputs> before = OpenRequantizeInputs(*in_view, config, true, kHints, true);
  absl::StatusOr<RequantizeInputs> after = OpenRequantizeInputs(*out_view, config, true, kHints, true);
  ASSERT_TRUE(before.ok() && after.ok());
  const std::string weight = "model.layers.0.self_attn.q_proj.weight";
  const QuantizedWeightReader* base_reader = ReaderOf(*before, weight);
  const QuantizedWeightReader* merged_reader = ReaderOf(*after, weight);
  ASSERT_TRUE(base_reader != nullptr && merged_reader != nullptr);
  std::vector<float> w(64 * 64), got(64 * 64);
  ASSERT_TRUE(base_reader->ReadRows(0, 64, w.data()).ok());
  ASSERT_TRUE(merged_reader->ReadRows(0, 64, got.data()).ok());
  const std::vector<double> delta = Delta(adapter[1], adapter[0], 2.0);
  double error = 0, energy = 0, change = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double exact = w[i] + delta[i];
    error += (got[i] - exact) * (got[i] - exact);
    energy += exact * exact;
    change += (got[i] - w[i]) * (got[i] - w[i]);
  }
  EXPECT_LT(std::sqrt(error / energy), tolerance)
      << scheme << ": the merged weight reads back far from the exact merge";
  EXPECT_GT(std::sqrt(change / energy), 5 * std::sqrt(error / energy))
      << scheme << ": the update is lost in the rounding";
}

// Policy DEQUANTIZE on the same bases: the merged weight becomes one F16 tensor under its
// module's name, its companions leave the header, the loader's settings learn of it, and every
// other tensor is untouched. ChatGLM refuses it: its loader quantizes every layer.
TEST_P(LoraMergeLayoutTest, DequantizePolicyWritesTheMergedWeightAsFloat) {
  const auto [scheme, tolerance] = GetParam();
  ASSERT_NO_FATAL_FAILURE(QuantizeBase(scheme));

  std::vector<FloatTensor> adapter;
  RecordingContext merge_context;
  absl::StatusOr<v1::JobResult> result =
      MergeIntoQuantized(v1::QUANTIZED_BASE_POLICY_DEQUANTIZE, &adapter, merge_context);
  if (absl::StartsWith(scheme, "chatglm")) {
    EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition) << result.status();
    EXPECT_EQ(ReasonOf(result.status()), "LORA_POLICY_UNSUPPORTED");
    return;
  }
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->figures().lora_merge().tensors_dequantized(), 2u);
  ASSERT_EQ(merge_context.warnings().size(), 1u);
  EXPECT_EQ(merge_context.warnings()[0].first, "LORA_DEQUANTIZED");

  absl::StatusOr<ModelView> in_view = OpenModel(*router_.Resolve(dir_.path() + "/quantized"));
  absl::StatusOr<ModelView> out_view = OpenModel(*router_.Resolve(dir_.path() + "/merged"));
  ASSERT_TRUE(in_view.ok() && out_view.ok()) << out_view.status();
  const std::string in_bytes = ReadFile(dir_.path() + "/quantized/model.safetensors");
  const std::string out_bytes = ReadFile(dir_.path() + "/merged/model.safetensors");
  std::map<std::string, const TensorInfo*> written;
  for (const TensorInfo& t : out_view->tensors) written[t.name] = &t;
  for (const TensorInfo& t : in_view->tensors) {
    const bool merged = absl::StrContains(t.name, "layers.0.self_attn.q_proj") ||
                        absl::StrContains(t.name, "layers.0.self_attn.v_proj");
    if (merged) {
      const bool weight = absl::EndsWith(t.name, "_proj.weight");
      EXPECT_EQ(written.count(t.name), weight ? 1u : 0u) << t.name << ": a dequantized group keeps only its weight";
      continue;
    }
    ASSERT_EQ(written.count(t.name), 1u) << t.name;
    EXPECT_EQ(in_bytes.substr(t.data_offset, t.size_bytes),
              out_bytes.substr(written[t.name]->data_offset, t.size_bytes))
        << t.name;
  }
  const std::string weight = "model.layers.0.self_attn.q_proj.weight";
  ASSERT_EQ(written.count(weight), 1u);
  EXPECT_EQ(written[weight]->dtype, DType::kF16);  // the weight's type before quantization
  EXPECT_EQ(written[weight]->shape, (std::vector<uint64_t>{64, 64}));

  const std::optional<nlohmann::json> config = nlohmann::json::parse(ReadFile(dir_.path() + "/quantized/config.json"));
  absl::StatusOr<RequantizeInputs> before = OpenRequantizeInputs(*in_view, config, true, kHints, true);
  ASSERT_TRUE(before.ok());
  const QuantizedWeightReader* base_reader = ReaderOf(*before, weight);
  ASSERT_NE(base_reader, nullptr);
  std::vector<float> w(64 * 64);
  ASSERT_TRUE(base_reader->ReadRows(0, 64, w.data()).ok());
  const std::vector<double> delta = Delta(adapter[1], adapter[0], 2.0);
  const std::vector<float> got = Values(dir_.path() + "/merged", weight);
  for (size_t i = 0; i < got.size(); ++i) {
    const double exact = w[i] + delta[i];
    ASSERT_NEAR(got[i], exact, std::fabs(exact) * std::ldexp(1.0, -11) * 1.01 + 1e-7) << i;
  }
  // The loaders' settings: bitsandbytes skips the modules, quanto's map drops them.
  if (absl::StartsWith(scheme, "bnb")) {
    const nlohmann::json merged_config = nlohmann::json::parse(ReadFile(dir_.path() + "/merged/config.json"));
    const nlohmann::json& skip = merged_config["quantization_config"]["llm_int8_skip_modules"];
    EXPECT_NE(std::find(skip.begin(), skip.end(), "model.layers.0.self_attn.q_proj"), skip.end()) << skip.dump();
    EXPECT_NE(std::find(skip.begin(), skip.end(), "lm_head"), skip.end()) << skip.dump();
  } else {
    const nlohmann::json qmap = nlohmann::json::parse(ReadFile(dir_.path() + "/merged/quanto_qmap.json"));
    EXPECT_FALSE(qmap.contains("model.layers.0.self_attn.q_proj"));
    EXPECT_TRUE(qmap.contains("model.layers.0.self_attn.k_proj"));
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, LoraMergeLayoutTest,
                         ::testing::Values(std::make_pair("bnb_int8", 0.02), std::make_pair("bnb_nf4", 0.15),
                                           std::make_pair("bnb_fp4", 0.2), std::make_pair("quanto_int8", 0.02),
                                           std::make_pair("quanto_int4", 0.2), std::make_pair("chatglm_int8", 0.02),
                                           std::make_pair("chatglm_int4", 0.2)),
                         [](const auto& info) { return std::string(info.param.first); });

}  // namespace
}  // namespace modelsmith
