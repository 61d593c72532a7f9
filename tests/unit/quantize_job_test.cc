// The quantize job in-process: the golden GGUF vectors reproduced through the whole job, the
// type plan, the quality report, refusals and warnings.
#include "workers/jobs/quantize/quantize_job.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "tests/support/checkpoint_files.h"
#include "tests/support/gguf_file.h"
#include "tests/support/quantize_job_fixture.h"
#include "tests/support/recording_context.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"
#include "workers/formats/gguf.h"
#include "workers/formats/model_view.h"
#include "workers/jobs/job_kinds.h"
#include "workers/storage/checksum.h"
#include "workers/storage/local_object_store.h"
#include "workers/tensor/ggml_types.h"

namespace modelsmith {
namespace {

namespace fs = std::filesystem;

std::string GoldenDir() { return std::string(MODELSMITH_SOURCE_DIR) + "/tests/data/golden/gguf"; }

Gguf Load(const std::string& path) { return LoadGguf(path); }

using QuantizeJobTest = QuantizeJobFixture;

class QuantizeGoldenTest : public QuantizeJobTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(QuantizeGoldenTest, JobOutputMatchesLlamaQuantizeTensorByTensor) {
  const std::string type = GetParam();
  v1::QuantizeSpec spec = Spec(GoldenDir() + "/input-f32.gguf", type + ".gguf", type);
  spec.set_pure(true);  // the golden set was made with --pure
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  Gguf got = Load(dir_.path() + "/" + type + ".gguf");
  Gguf want = Load(GoldenDir() + "/expected-" + type + ".gguf");
  ASSERT_EQ(got.header.tensors.size(), want.header.tensors.size());
  for (const GgufTensor& w : want.header.tensors) {
    const GgufTensor* g = got.Find(w.name);
    ASSERT_NE(g, nullptr) << w.name;
    EXPECT_EQ(g->type, w.type) << w.name;
    EXPECT_EQ(g->ne, w.ne) << w.name;
    EXPECT_TRUE(got.Data(*g) == want.Data(w)) << type << " " << w.name << " differs from llama.cpp";
  }
  EXPECT_EQ(got.header.Find("general.file_type")->AsUnsigned(), want.header.Find("general.file_type")->AsUnsigned());
  EXPECT_EQ(got.header.Find("general.quantization_version")->AsUnsigned(), 2u);
  EXPECT_EQ(got.header.Find("general.architecture")->AsString(), "llama");  // metadata copied
  EXPECT_EQ(result->figures().quantize().tensors_quantized(), 9u);          // every 2-D tensor
  EXPECT_EQ(result->figures().quantize().tensors_kept(), 3u);               // the three norms
  EXPECT_TRUE(fs::exists(dir_.path() + "/" + type + ".gguf.manifest.json"));
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantizeGoldenTest,
                         ::testing::Values("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
                                           "Q6_K"));

TEST_F(QuantizeJobTest, AlreadyQuantizedInputIsRefusedUnlessAllowed) {
  v1::QuantizeSpec spec = Spec(GoldenDir() + "/expected-Q4_0.gguf", "re.gguf", "Q8_0");
  absl::StatusOr<v1::JobResult> refused = Run(spec);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(refused.status()), "ALREADY_QUANTIZED");
  EXPECT_FALSE(fs::exists(dir_.path() + "/re.gguf"));
  spec.set_allow_requantize(true);
  absl::StatusOr<v1::JobResult> allowed = Run(spec);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  std::vector<std::string> codes = Codes();
  EXPECT_EQ(std::count(codes.begin(), codes.end(), "REQUANTIZED"), 9);
}

TEST_F(QuantizeJobTest, SafetensorsInputKeepsNamesAndReportsQuality) {
  const std::string input = dir_.path() + "/m.safetensors";
  std::vector<TestTensor> tensors = LlamaLikeTensors(1, 256, 128);  // rows of 256 and 768: whole Q4_K blocks
  tensors.push_back({"odd.weight", DType::kF32, {4, 33}});          // rows of 33: not whole Q8_0 blocks
  tensors.push_back({"position_ids", DType::kI64, {1, 16}});        // integers pass through
  // Finite random F16/F32 values: bytes from a fixed pattern may be NaN, so write real values.
  std::vector<SafetensorsEntry> entries;
  std::string data;
  for (const TestTensor& t : tensors) {
    const uint64_t size = *StorageBytes(t.dtype, t.shape);
    entries.push_back({t.name, t.dtype, t.shape, size});
    const uint64_t count = *ElementCount(t.shape);
    for (uint64_t i = 0; i < count; ++i) {
      const float v = std::sin(0.37f * i + t.name.size()) * 0.1f;
      if (t.dtype == DType::kF32) data.append(reinterpret_cast<const char*>(&v), 4);
      if (t.dtype == DType::kF16) {
        uint16_t h = 0x2E66 ^ (i & 0x3FF);
        data.append(reinterpret_cast<const char*>(&h), 2);
      }
      if (t.dtype == DType::kI64) {
        int64_t k = i;
        data.append(reinterpret_cast<const char*>(&k), 8);
      }
    }
  }
  std::ofstream(input, std::ios::binary) << SerializeSafetensorsHeader(entries, {{"format", "pt"}}) << data;

  v1::QuantizeSpec spec = Spec(input, "m.gguf", "Q8_0");
  auto* rule = spec.add_tensor_types();
  rule->set_pattern(".*mlp\\.down_proj\\.weight");
  rule->set_type("Q4_K");
  spec.add_exclude("lm_head\\.weight");
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  Gguf got = Load(dir_.path() + "/m.gguf");
  EXPECT_EQ(got.Find("model.layers.0.self_attn.q_proj.weight")->type, GgmlType::kQ8_0);
  EXPECT_EQ(got.Find("model.layers.0.mlp.down_proj.weight")->type, GgmlType::kQ4_K);
  EXPECT_EQ(got.Find("lm_head.weight")->type, GgmlType::kF16);     // excluded: kept
  EXPECT_EQ(got.Find("model.norm.weight")->type, GgmlType::kF32);  // 1-D: F32
  EXPECT_EQ(got.Find("odd.weight")->type, GgmlType::kF32);         // not whole blocks: kept
  EXPECT_EQ(got.Find("position_ids")->type, GgmlType::kI64);
  EXPECT_EQ(got.Find("model.layers.0.mlp.gate_proj.weight")->ne, (std::vector<uint64_t>{256, 768}));  // reversed
  std::vector<std::string> codes = Codes();
  EXPECT_NE(std::find(codes.begin(), codes.end(), "TENSOR_NOT_QUANTIZABLE"), codes.end());

  const v1::QuantizeFigures& q = result->figures().quantize();
  ASSERT_GT(q.worst_size(), 0);
  EXPECT_EQ(q.worst(0).type(), "Q4_K");  // the 4-bit tensor is the least accurate
  EXPECT_GT(q.worst(0).snr_db(), 10);
  std::ifstream manifest_file(dir_.path() + "/m.gguf.manifest.json");
  nlohmann::json manifest = nlohmann::json::parse(manifest_file);
  EXPECT_GE(manifest["quality"].size(), 8u);
  EXPECT_EQ(manifest["artifacts"][0]["size_bytes"], fs::file_size(dir_.path() + "/m.gguf"));

  spec.set_strict(true);
  spec.set_overwrite(true);
  absl::StatusOr<v1::JobResult> strict = Run(spec);
  EXPECT_EQ(ReasonOf(strict.status()), "TENSOR_NOT_QUANTIZABLE");
}

TEST_F(QuantizeJobTest, OccupiedOutputNeedsOverwrite) {
  ASSERT_TRUE(Run(Spec(GoldenDir() + "/input-f32.gguf", "o.gguf", "Q8_0")).ok());
  absl::StatusOr<v1::JobResult> again = Run(Spec(GoldenDir() + "/input-f32.gguf", "o.gguf", "Q8_0"));
  EXPECT_EQ(ReasonOf(again.status()), "OUTPUT_EXISTS");
}

TEST_F(QuantizeJobTest, CancelledJobLeavesNothing) {
  context_.StopAfterProgressReports(2);
  absl::StatusOr<v1::JobResult> result = Run(Spec(GoldenDir() + "/input-f32.gguf", "c.gguf", "Q4_K"));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  for (const auto& e : fs::directory_iterator(dir_.path())) ADD_FAILURE() << "left behind: " << e.path();
}

TEST_F(QuantizeJobTest, Q4KMPresetFollowsLlamaCppsTensorClassesWithGoldenBytes) {
  const v1::QuantizeSpec spec = Spec(GoldenDir() + "/input-f32.gguf", "q4km.gguf", "Q4_K_M");
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  Gguf out = Load(spec.output());
  Gguf q4 = Load(GoldenDir() + "/expected-Q4_K.gguf");
  Gguf q6 = Load(GoldenDir() + "/expected-Q6_K.gguf");
  // One block: use_more_bits(0, 1) holds, so attn_v and ffn_down take Q6_K, as output does.
  const std::set<std::string> six = {"output.weight", "blk.0.attn_v.weight", "blk.0.ffn_down.weight"};
  int checked = 0;
  for (const GgufTensor& t : out.header.tensors) {
    if (t.ne.size() < 2) continue;
    const bool is_six = six.contains(t.name);
    EXPECT_EQ(t.type, is_six ? GgmlType::kQ6_K : GgmlType::kQ4_K) << t.name;
    const Gguf& golden = is_six ? q6 : q4;
    const GgufTensor* expected = golden.Find(t.name);
    ASSERT_NE(expected, nullptr) << t.name;
    EXPECT_EQ(out.Data(t), golden.Data(*expected)) << t.name;
    ++checked;
  }
  EXPECT_GE(checked, 9);
  bool file_type = false;
  for (const GgufKv& kv : out.header.kvs) {
    if (kv.key == "general.file_type") file_type = kv.AsUnsigned() == 15u;
  }
  EXPECT_TRUE(file_type);
}

// Presets count attention-V and FFN-down tensors in llama-quantize's order (by layer number), not
// in the file's: a file that stores blk.10 before blk.2 (lexicographic names) still gets Q6_K
// exactly on the layers use_more_bits picks.
TEST_F(QuantizeJobTest, PresetCountsLayersInLayerOrderWhateverTheFileOrder) {
  constexpr int kLayers = 16;
  std::vector<std::string> names;
  for (int layer = 0; layer < kLayers; ++layer) {
    for (const char* tensor : {"attn_v.weight", "ffn_down.weight"}) {
      names.push_back("blk." + std::to_string(layer) + "." + tensor);
    }
  }
  std::sort(names.begin(), names.end());  // blk.0, blk.1, blk.10, ..., blk.15, blk.2, ...
  ASSERT_EQ(names[4], "blk.10.attn_v.weight");
  std::vector<GgufTensor> tensors;
  uint64_t offset = 0;
  for (const std::string& name : names) {
    GgufTensor t;
    t.name = name;
    t.ne = {256, 2};
    t.type = GgmlType::kF32;
    t.offset = offset;
    t.size_bytes = 256 * 2 * 4;
    offset += t.size_bytes + GgufPadding(t.size_bytes, kGgufDefaultAlignment);
    tensors.push_back(t);
  }
  const std::string input = dir_.path() + "/lexicographic.gguf";
  {
    std::ofstream out(input, std::ios::binary);
    out << SerializeGgufHeader({}, tensors);
    for (size_t i = 0; i < tensors.size(); ++i) {
      std::vector<float> values(256 * 2);
      for (size_t j = 0; j < values.size(); ++j) values[j] = std::sin(0.1f * static_cast<float>(i * 512 + j));
      out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * 4));
      out << std::string(GgufPadding(tensors[i].size_bytes, kGgufDefaultAlignment), '\0');
    }
  }
  absl::StatusOr<v1::JobResult> result = Run(Spec(input, "q4km.gguf", "Q4_K_M"));
  ASSERT_TRUE(result.ok()) << result.status();
  Gguf out = Load(dir_.path() + "/q4km.gguf");
  auto use_more_bits = [](int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; };
  for (int layer = 0; layer < kLayers; ++layer) {
    for (const char* tensor : {"attn_v.weight", "ffn_down.weight"}) {
      const std::string name = "blk." + std::to_string(layer) + "." + tensor;
      const GgufTensor* t = out.Find(name);
      ASSERT_NE(t, nullptr) << name;
      EXPECT_EQ(t->type, use_more_bits(layer, kLayers) ? GgmlType::kQ6_K : GgmlType::kQ4_K) << name;
    }
  }
  EXPECT_EQ(out.header.tensors[2].name, "blk.1.attn_v.weight") << "written in llama-quantize's order";
}

// Writes the golden input as a two-part split the way gguf-split does: every KV plus split.no,
// split.count (U16) and split.tensors.count (I32) in the first part, only the split keys in the
// second, and each part's tensors with offsets from its own data section.
void WriteSplit(const std::string& prefix, uint16_t first_no = 0) {
  Gguf input = Load(GoldenDir() + "/input-f32.gguf");
  const size_t half = input.header.tensors.size() / 2;
  auto kv = [](const std::string& key, GgufValueType type, const std::string& bytes) {
    GgufKv k;
    k.key = key;
    k.type = type;
    k.value_bytes = bytes;
    return k;
  };
  auto u16 = [](uint16_t v) { return std::string(reinterpret_cast<const char*>(&v), 2); };
  const int32_t total = static_cast<int32_t>(input.header.tensors.size());
  for (uint16_t part = 0; part < 2; ++part) {
    std::vector<GgufKv> kvs;
    if (part == 0) {
      for (const GgufKv& k : input.header.kvs) {
        if (k.key != "general.alignment") kvs.push_back(k);
      }
    }
    kvs.push_back(kv("split.no", GgufValueType::kU16, u16(part == 0 ? first_no : part)));
    kvs.push_back(kv("split.count", GgufValueType::kU16, u16(2)));
    kvs.push_back(
        kv("split.tensors.count", GgufValueType::kI32, std::string(reinterpret_cast<const char*>(&total), 4)));
    std::vector<GgufTensor> tensors(input.header.tensors.begin() + (part == 0 ? 0 : half),
                                    part == 0 ? input.header.tensors.begin() + half : input.header.tensors.end());
    std::ofstream out(prefix + (part == 0 ? "-00001-of-00002.gguf" : "-00002-of-00002.gguf"), std::ios::binary);
    out << SerializeGgufHeader(kvs, tensors);
    for (const GgufTensor& t : tensors) {
      GgufTensor source = *input.Find(t.name);
      out << input.Data(source) << std::string(GgufPadding(t.size_bytes, kGgufDefaultAlignment), '\0');
    }
  }
}

TEST_F(QuantizeJobTest, SplitGgufInputIsReadAsOneModelFromAnyPart) {
  WriteSplit(dir_.path() + "/split");
  const v1::QuantizeSpec spec = Spec(dir_.path() + "/split-00002-of-00002.gguf", "joined.gguf", "Q8_0");
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  Gguf out = Load(spec.output());
  Gguf golden = Load(GoldenDir() + "/expected-Q8_0.gguf");
  ASSERT_EQ(out.header.tensors.size(), golden.header.tensors.size());
  for (const GgufTensor& t : out.header.tensors) {
    const GgufTensor* expected = golden.Find(t.name);
    ASSERT_NE(expected, nullptr) << t.name;
    EXPECT_EQ(out.Data(t), golden.Data(*expected)) << t.name;
  }
  for (const GgufKv& kv : out.header.kvs) EXPECT_FALSE(absl::StartsWith(kv.key, "split.")) << kv.key;
  EXPECT_NE(out.header.Find("general.architecture"), nullptr);
}

TEST_F(QuantizeJobTest, SplitOutputWritesPartsAsGgufSplitDoesAndReadsBackAsOneModel) {
  v1::QuantizeSpec spec = Spec(GoldenDir() + "/input-f32.gguf", "parts/model-Q8_0.gguf", "Q8_0");
  fs::create_directories(dir_.path() + "/parts");
  spec.set_max_split_size("300KB");
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string stem = dir_.path() + "/parts/model-Q8_0";
  EXPECT_FALSE(fs::exists(spec.output()));
  EXPECT_TRUE(fs::exists(spec.output() + ".manifest.json"));
  const int parts = result->artifacts_size() - 1;  // the manifest is last
  ASSERT_GE(parts, 3);
  for (int i = 0; i < parts; ++i) {  // the checksums taken while writing are the files' own
    std::ifstream in(result->artifacts(i).uri(), std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    EXPECT_EQ(result->artifacts(i).sha256(), Sha256Hex(bytes.str())) << result->artifacts(i).uri();
  }
  for (int i = 0; i < parts; ++i) {
    const std::string name = GgufSplitUri(stem, i + 1, parts);
    EXPECT_EQ(result->artifacts(i).uri(), name);
    EXPECT_LE(fs::file_size(name), 300'000u + 64'000u) << name;  // a part may hold one tensor over the limit
    Gguf part = Load(name);
    EXPECT_EQ(part.header.Find("split.no")->AsUnsigned(), static_cast<uint64_t>(i));
    EXPECT_EQ(part.header.Find("split.count")->AsUnsigned(), static_cast<uint64_t>(parts));
    EXPECT_EQ(part.header.Find("general.architecture") != nullptr, i == 0) << "metadata only in the first part";
  }
  // Our reader takes it back as one model, every tensor as llama.cpp would have written it.
  LocalObjectStore store;
  absl::StatusOr<ModelView> model = OpenModel({&store, GgufSplitUri(stem, 2, parts)});
  ASSERT_TRUE(model.ok()) << model.status();
  Gguf golden = Load(GoldenDir() + "/expected-Q8_0.gguf");
  ASSERT_EQ(model->tensors.size(), golden.header.tensors.size());
  for (const TensorInfo& t : model->tensors) {
    std::string bytes(t.size_bytes, '\0');
    ASSERT_TRUE(model->files[t.file_index]
                    .object->ReadAt(t.data_offset, t.size_bytes, reinterpret_cast<std::byte*>(bytes.data()))
                    .ok());
    EXPECT_EQ(bytes, golden.Data(*golden.Find(t.name))) << t.name;
  }
  spec.set_max_split_size("lots");
  EXPECT_EQ(ContextOf(Run(spec).status())["field"], "quantize.max_split_size");
}

TEST_F(QuantizeJobTest, BrokenSplitsAreRefusedNamingThePart) {
  WriteSplit(dir_.path() + "/bad", /*first_no=*/1);  // the first part claims to be the second
  absl::Status status = Run(Spec(dir_.path() + "/bad-00001-of-00002.gguf", "x.gguf", "Q8_0")).status();
  EXPECT_EQ(ReasonOf(status), "GGUF_SPLIT_INVALID") << status;
  EXPECT_NE(std::string(status.message()).find("bad-00001-of-00002.gguf"), std::string::npos) << status;

  WriteSplit(dir_.path() + "/lost");
  fs::remove(dir_.path() + "/lost-00002-of-00002.gguf");
  status = Run(Spec(dir_.path() + "/lost-00001-of-00002.gguf", "y.gguf", "Q8_0")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;

  fs::rename(dir_.path() + "/lost-00001-of-00002.gguf", dir_.path() + "/renamed.gguf");
  status = Run(Spec(dir_.path() + "/renamed.gguf", "z.gguf", "Q8_0")).status();
  EXPECT_EQ(ReasonOf(status), "GGUF_SPLIT_INVALID") << status;
}

TEST_F(QuantizeJobTest, BadSpecsNameTheField) {
  v1::JobSpec spec;
  *spec.mutable_quantize() = Spec(GoldenDir() + "/input-f32.gguf", "x.gguf", "Q7_0");
  EXPECT_EQ(ContextOf(ValidateSpec(spec))["field"], "quantize.scheme");
  spec.mutable_quantize()->set_scheme("bnb_nf4");  // a layout: the output is a directory
  EXPECT_EQ(ReasonOf(ValidateSpec(spec)), "INVALID_OUTPUT");
  spec.mutable_quantize()->set_scheme("Q8_0");
  spec.mutable_quantize()->set_output(dir_.path() + "/x.bin");
  EXPECT_EQ(ContextOf(ValidateSpec(spec))["field"], "quantize.output");
  spec.mutable_quantize()->set_output(dir_.path() + "/x.gguf");
  spec.mutable_quantize()->add_include("([unclosed");
  EXPECT_EQ(ContextOf(ValidateSpec(spec))["field"], "quantize.include[0]");
}

}  // namespace
}  // namespace modelsmith
