// The quantize job for the bitsandbytes, optimum-quanto and ChatGLM layouts, in-process: key names,
// shapes and dtypes per formats.md §5-7, codes recomputed from the source rows, the JSON and
// config files the loaders read, what is kept, refusals, and InspectModel's layout detection.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "nlohmann/json.hpp"
#include "tests/support/checkpoint_files.h"
#include "tests/support/recording_context.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"
#include "workers/jobs/inspect/inspect.h"
#include "workers/jobs/job_kinds.h"
#include "workers/formats/quantized_weight_reader.h"
#include "workers/quant/bitsandbytes.h"
#include "workers/quant/chatglm.h"
#include "workers/quant/quanto.h"
#include "workers/formats/gguf.h"
#include "workers/storage/checksum.h"
#include "workers/storage/local_object_store.h"

namespace modelsmith {
namespace {

namespace fs = std::filesystem;

struct Output {
  std::unique_ptr<RandomAccessObject> object;
  SafetensorsHeader header;
  const TensorInfo* Find(const std::string& name) const {
    for (const TensorInfo& t : header.tensors) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }
  std::string Data(const std::string& name) const {
    const TensorInfo* t = Find(name);
    EXPECT_NE(t, nullptr) << name;
    if (t == nullptr) return "";
    std::string bytes(t->size_bytes, '\0');
    EXPECT_TRUE(object->ReadAt(t->data_offset, t->size_bytes, reinterpret_cast<std::byte*>(bytes.data())).ok());
    return bytes;
  }
};

Output Load(const std::string& path) {
  LocalObjectStore store;
  Output out;
  auto object = store.OpenForRead(path);
  EXPECT_TRUE(object.ok()) << path << ": " << object.status();
  if (!object.ok()) return out;
  out.object = *std::move(object);
  auto header = ReadSafetensorsHeader(*out.object);
  EXPECT_TRUE(header.ok()) << header.status();
  if (header.ok()) out.header = *std::move(header);
  return out;
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());
}

class LayoutQuantizeJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_.path() + "/in");
    values_ = WriteFloatCheckpoint(dir_.path() + "/in/model.safetensors", LlamaLikeTensors(2, 64, 128));
    std::ofstream(dir_.path() + "/in/config.json") << R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64})";
  }
  v1::QuantizeSpec Spec(const std::string& scheme) {
    v1::QuantizeSpec spec;
    spec.set_input(dir_.path() + "/in/model.safetensors");
    spec.set_output(dir_.path() + "/out-" + scheme);
    spec.set_scheme(scheme);
    return spec;
  }
  absl::StatusOr<v1::JobResult> Run(const v1::QuantizeSpec& spec) {
    JobRun run;
    run.job_id = "job-test";
    *run.spec.mutable_quantize() = spec;
    run.router = &router_;
    return RunJob(run, context_);
  }

  TempDir dir_;
  StorageRouter router_{{}};
  RecordingContext context_;
  std::map<std::string, std::vector<float>> values_;
};

constexpr char kQ[] = "model.layers.0.self_attn.q_proj";
constexpr char kDown[] = "model.layers.1.mlp.down_proj";

TEST_F(LayoutQuantizeJobTest, BnbInt8WritesWeightScbAndFormatWithCodesFromFp16Rows) {
  const v1::QuantizeSpec spec = Spec("bnb_int8");
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->figures().quantize().tensors_quantized(), 14u);  // 7 per block; embeddings and head kept
  Output out = Load(spec.output() + "/model.safetensors");
  const std::string q = kQ;
  ASSERT_NE(out.Find(q + ".weight"), nullptr);
  EXPECT_EQ(out.Find(q + ".weight")->dtype, DType::kI8);
  EXPECT_EQ(out.Find(q + ".SCB")->dtype, DType::kF32);
  EXPECT_EQ(out.Find(q + ".SCB")->shape, std::vector<uint64_t>{64});
  EXPECT_TRUE(out.Find(q + ".weight_format")->shape.empty());
  EXPECT_EQ(out.Data(q + ".weight_format"), std::string(1, '\0'));
  const std::string codes = out.Data(q + ".weight");
  const std::string scb = out.Data(q + ".SCB");
  const std::vector<float>& source = values_[q + ".weight"];
  for (size_t row = 0; row < 64; ++row) {
    int8_t expected[64];
    const float scale = BnbInt8QuantizeRow(source.data() + row * 64, 64, expected);
    EXPECT_EQ(std::memcmp(codes.data() + row * 64, expected, 64), 0) << row;
    EXPECT_EQ(std::memcmp(scb.data() + row * 4, &scale, 4), 0) << row;
  }
  EXPECT_EQ(out.Find("model.embed_tokens.weight")->dtype, DType::kF16);
  EXPECT_EQ(out.Find("lm_head.weight")->dtype, DType::kF16);
  EXPECT_EQ(out.Find("model.norm.weight")->dtype, DType::kF32);
  EXPECT_EQ(out.header.metadata.at("format"), "pt");

  const nlohmann::json config = ReadJson(spec.output() + "/config.json");
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");  // the input's keys are kept
  const nlohmann::json& qc = config["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "bitsandbytes");
  EXPECT_EQ(qc["load_in_8bit"], true);
  EXPECT_EQ(qc["load_in_4bit"], false);
  EXPECT_EQ(qc["llm_int8_threshold"], 6.0);
  EXPECT_EQ(qc["bnb_4bit_quant_storage"], "uint8");
  const nlohmann::json manifest = ReadJson(spec.output() + "/modelsmith.manifest.json");
  EXPECT_EQ(manifest["quality"].size(), 14u);
  EXPECT_GT(manifest["quality"][0]["snr_db"].get<double>(), 30.0);
  EXPECT_EQ(manifest["artifacts"].size(), 2u);  // model + config
  // The checksum taken while writing is the file's own.
  std::ifstream model_file(spec.output() + "/model.safetensors", std::ios::binary);
  std::stringstream model_bytes;
  model_bytes << model_file.rdbuf();
  EXPECT_EQ(manifest["artifacts"][0]["sha256"], Sha256Hex(model_bytes.str()));
}

TEST_F(LayoutQuantizeJobTest, Nf4DoubleQuantKeysStateJsonAndPackedCodes) {
  v1::QuantizeSpec spec = Spec("bnb_nf4");
  spec.set_double_quant(true);
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  Output out = Load(spec.output() + "/model.safetensors");
  const std::string w = std::string(kQ) + ".weight";
  EXPECT_EQ(out.Find(w)->shape, (std::vector<uint64_t>{2048, 1}));
  EXPECT_EQ(out.Find(w)->dtype, DType::kU8);
  EXPECT_EQ(out.Find(w + ".absmax")->dtype, DType::kU8);  // nested: absmax codes
  EXPECT_EQ(out.Find(w + ".absmax")->shape, std::vector<uint64_t>{64});
  EXPECT_EQ(out.Find(w + ".nested_absmax")->shape, std::vector<uint64_t>{1});
  EXPECT_EQ(out.Find(w + ".nested_quant_map")->shape, std::vector<uint64_t>{256});
  EXPECT_EQ(out.Find(w + ".quant_map")->shape, std::vector<uint64_t>{16});
  const std::string state = out.Data(w + ".quant_state.bitsandbytes__nf4");
  const nlohmann::json parsed = nlohmann::json::parse(state);
  EXPECT_EQ(parsed["quant_type"], "nf4");
  EXPECT_EQ(parsed["blocksize"], 64);
  EXPECT_EQ(parsed["dtype"], "float16");
  EXPECT_EQ(parsed["shape"], nlohmann::json::array({64, 64}));
  EXPECT_EQ(parsed["nested_blocksize"], 256);
  EXPECT_EQ(parsed["nested_dtype"], "float32");
  EXPECT_TRUE(parsed["nested_offset"].is_number_float());
  EXPECT_EQ(state.rfind("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float16\", \"shape\": [64, 64]", 0),
            0u);

  const std::vector<float>& source = values_[w];
  std::vector<uint8_t> packed(source.size() / 2);
  std::vector<float> absmax(source.size() / 64);
  Bnb4Quantize(Bnb4Type::kNf4, source.data(), source.size(), 64, packed.data(), absmax.data());
  EXPECT_EQ(out.Data(w), std::string(reinterpret_cast<const char*>(packed.data()), packed.size()));
  const NestedAbsmax nested = BnbNestAbsmax(absmax);
  EXPECT_EQ(out.Data(w + ".absmax"), std::string(nested.codes.begin(), nested.codes.end()));
  const nlohmann::json config = ReadJson(spec.output() + "/config.json");
  EXPECT_EQ(config["quantization_config"]["load_in_4bit"], true);
  EXPECT_EQ(config["quantization_config"]["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(config["quantization_config"]["bnb_4bit_use_double_quant"], true);
}

TEST_F(LayoutQuantizeJobTest, Fp4WithoutDoubleQuantHasFloatAbsmaxAndExactStateJson) {
  v1::QuantizeSpec spec = Spec("bnb_fp4");
  spec.set_block_size(128);
  ASSERT_TRUE(Run(spec).ok());
  Output out = Load(spec.output() + "/model.safetensors");
  const std::string w = std::string(kQ) + ".weight";
  EXPECT_EQ(out.Find(w + ".absmax")->dtype, DType::kF32);
  EXPECT_EQ(out.Find(w + ".absmax")->shape, std::vector<uint64_t>{32});
  EXPECT_EQ(out.Find(w + ".nested_absmax"), nullptr);
  EXPECT_EQ(out.Data(w + ".quant_state.bitsandbytes__fp4"),
            R"({"quant_type": "fp4", "blocksize": 128, "dtype": "float16", "shape": [64, 64]})");
  const std::string map = out.Data(w + ".quant_map");
  float third;
  std::memcpy(&third, map.data() + 2 * 4, 4);
  EXPECT_EQ(third, 8.0f / 12.0f);
}

TEST_F(LayoutQuantizeJobTest, QuantoInt4PacksRowPairsAndWritesTheQmap) {
  const v1::QuantizeSpec spec = Spec("quanto_int4");
  ASSERT_TRUE(Run(spec).ok());
  Output out = Load(spec.output() + "/model.safetensors");
  // q_proj: 64 columns, not above 128: one group per row (per channel), 64 groups of 64.
  const std::string q = kQ;
  EXPECT_EQ(out.Find(q + ".weight._data._data")->shape, (std::vector<uint64_t>{32, 64}));
  EXPECT_EQ(out.Find(q + ".weight._scale")->shape, (std::vector<uint64_t>{64, 1}));
  EXPECT_EQ(out.Find(q + ".weight._scale")->dtype, DType::kF16);
  EXPECT_EQ(out.Find(q + ".weight._shift")->shape, (std::vector<uint64_t>{64, 1}));
  EXPECT_TRUE(out.Find(q + ".input_scale")->shape.empty());
  // down_proj: 192 columns, group 96: 128 groups, packed into 64 rows.
  const std::string d = kDown;
  EXPECT_EQ(out.Find(d + ".weight._data._data")->shape, (std::vector<uint64_t>{64, 96}));
  const std::vector<float>& source = values_[d + ".weight"];
  std::vector<uint8_t> low(96), high(96), expected(96);
  float scale, shift;
  QuantoInt4QuantizeGroup(StoredFloat::kF16, source.data() + 5 * 96, 96, low.data(), &scale, &shift);
  QuantoInt4QuantizeGroup(StoredFloat::kF16, source.data() + (5 + 64) * 96, 96, high.data(), &scale, &shift);
  QuantoPackRowPair(low.data(), high.data(), 96, expected.data());
  EXPECT_EQ(out.Data(d + ".weight._data._data").substr(5 * 96, 96), std::string(expected.begin(), expected.end()));
  const nlohmann::json qmap = ReadJson(spec.output() + "/quanto_qmap.json");
  EXPECT_EQ(qmap[q]["weights"], "qint4");
  EXPECT_EQ(qmap[q]["activations"], "none");
  EXPECT_FALSE(qmap.contains("lm_head"));
}

TEST_F(LayoutQuantizeJobTest, QuantoInt8ScalesPerRow) {
  const v1::QuantizeSpec spec = Spec("quanto_int8");
  ASSERT_TRUE(Run(spec).ok());
  Output out = Load(spec.output() + "/model.safetensors");
  const std::string q = kQ;
  EXPECT_EQ(out.Find(q + ".weight._data")->dtype, DType::kI8);
  EXPECT_EQ(out.Find(q + ".weight._scale")->shape, (std::vector<uint64_t>{64, 1}));
  int8_t expected[64];
  QuantoInt8QuantizeRow(StoredFloat::kF16, values_[q + ".weight"].data() + 3 * 64, 64, expected);
  EXPECT_EQ(out.Data(q + ".weight._data").substr(3 * 64, 64), std::string(reinterpret_cast<char*>(expected), 64));
  EXPECT_EQ(ReadJson(spec.output() + "/quanto_qmap.json")[q]["weights"], "qint8");
}

TEST_F(LayoutQuantizeJobTest, ChatglmInt4HalvesColumnsAndSetsQuantizationBit) {
  const v1::QuantizeSpec spec = Spec("chatglm_int4");
  ASSERT_TRUE(Run(spec).ok());
  Output out = Load(spec.output() + "/model.safetensors");
  const std::string q = kQ;
  EXPECT_EQ(out.Find(q + ".weight")->shape, (std::vector<uint64_t>{64, 32}));
  EXPECT_EQ(out.Find(q + ".weight")->dtype, DType::kI8);
  EXPECT_EQ(out.Find(q + ".weight_scale")->dtype, DType::kF16);
  int8_t expected[32];
  const uint16_t scale = ChatglmQuantizeRow(4, values_[q + ".weight"].data(), 64, expected);
  EXPECT_EQ(out.Data(q + ".weight").substr(0, 32), std::string(reinterpret_cast<char*>(expected), 32));
  EXPECT_EQ(out.Data(q + ".weight_scale").substr(0, 2), std::string(reinterpret_cast<const char*>(&scale), 2));
  EXPECT_EQ(ReadJson(spec.output() + "/config.json")["quantization_bit"], 4);
}

TEST_F(LayoutQuantizeJobTest, InspectRecognisesEachLayoutAndQuantizedInputIsRefused) {
  const std::pair<const char*, const char*> cases[] = {{"bnb_int8", "bnb_int8"},
                                                       {"bnb_nf4", "bnb_nf4"},
                                                       {"quanto_int4", "quanto_qint4"},
                                                       {"quanto_int8", "quanto_qint8"},
                                                       {"chatglm_int8", "chatglm_int8"}};
  for (const auto& [scheme, layout] : cases) {
    const v1::QuantizeSpec spec = Spec(scheme);
    ASSERT_TRUE(Run(spec).ok()) << scheme;
    absl::StatusOr<v1::ModelInfo> info = InspectModel(router_, spec.output());
    ASSERT_TRUE(info.ok()) << info.status();
    ASSERT_EQ(info->quantized_size(), 14) << scheme;
    EXPECT_EQ(info->quantized(0).layout(), layout) << scheme;
    EXPECT_EQ(info->quantized(0).module(), "model.layers.0.self_attn.q_proj") << scheme;

    v1::QuantizeSpec again = Spec("bnb_nf4");
    again.set_input(spec.output());
    again.set_output(dir_.path() + "/again");
    absl::StatusOr<v1::JobResult> refused = Run(again);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << scheme;
    EXPECT_EQ(ReasonOf(refused.status()), "ALREADY_QUANTIZED") << scheme;
    again.set_scheme("Q8_0");
    again.set_output(dir_.path() + "/again.gguf");
    refused = Run(again);
    EXPECT_EQ(ReasonOf(refused.status()), "ALREADY_QUANTIZED") << scheme << ": " << refused.status();
    EXPECT_FALSE(fs::exists(dir_.path() + "/again.gguf"));
  }
}

TEST_F(LayoutQuantizeJobTest, WeightsLargerThanAChunkMatchTheKernelsAcrossPartAndChunkEdges) {
  // 4608 x 1024 = 4.7M elements: two chunks of about 4M, each cut into parts of 256K elements.
  fs::create_directories(dir_.path() + "/big");
  const std::string w = "model.layers.0.mlp.up_proj.weight";
  values_ = WriteFloatCheckpoint(dir_.path() + "/big/model.safetensors", {{w, DType::kBF16, {4608, 1024}}});
  const std::vector<float>& source = values_[w];
  for (const char* scheme : {"bnb_int8", "bnb_nf4", "quanto_int4"}) {
    v1::QuantizeSpec spec = Spec(scheme);
    spec.set_input(dir_.path() + "/big/model.safetensors");
    ASSERT_TRUE(Run(spec).ok()) << scheme;
    Output out = Load(spec.output() + "/model.safetensors");
    for (uint64_t row : {uint64_t{0}, uint64_t{255}, uint64_t{256}, uint64_t{4095}, uint64_t{4096}, uint64_t{4607}}) {
      const float* x = source.data() + row * 1024;
      if (std::string(scheme) == "bnb_int8") {
        std::vector<float> rounded(x, x + 1024);
        for (float& v : rounded) v = RoundTo(StoredFloat::kF16, v);
        int8_t expected[1024];
        BnbInt8QuantizeRow(rounded.data(), 1024, expected);
        EXPECT_EQ(out.Data("model.layers.0.mlp.up_proj.weight").substr(row * 1024, 1024),
                  std::string(reinterpret_cast<char*>(expected), 1024))
            << scheme << " row " << row;
      } else if (std::string(scheme) == "bnb_nf4") {
        uint8_t expected[512];
        float absmax[16];
        Bnb4Quantize(Bnb4Type::kNf4, x, 1024, 64, expected, absmax);
        EXPECT_EQ(out.Data(w).substr(row * 512, 512), std::string(reinterpret_cast<char*>(expected), 512))
            << scheme << " row " << row;
        EXPECT_EQ(out.Data(w + ".absmax").substr(row * 64, 64), std::string(reinterpret_cast<char*>(absmax), 64));
      } else {
        // 1024 columns: groups of 128, 36864 groups, byte rows pair group r with r + 18432.
        const uint64_t group = row * 8;
        if (group >= 18432) continue;
        uint8_t low[128], high[128], expected[128];
        float scale, shift;
        QuantoInt4QuantizeGroup(StoredFloat::kBF16, source.data() + group * 128, 128, low, &scale, &shift);
        QuantoInt4QuantizeGroup(StoredFloat::kBF16, source.data() + (group + 18432) * 128, 128, high, &scale, &shift);
        QuantoPackRowPair(low, high, 128, expected);
        EXPECT_EQ(out.Data("model.layers.0.mlp.up_proj.weight._data._data").substr(group * 128, 128),
                  std::string(reinterpret_cast<char*>(expected), 128))
            << scheme << " group " << group;
      }
    }
  }
}

// The F32 data of tensor `name` in a GGUF file.
std::vector<float> GgufF32(const std::string& path, const std::string& name) {
  LocalObjectStore store;
  auto object = store.OpenForRead(path);
  auto header = ReadGgufHeader(**object);
  for (const GgufTensor& t : header->tensors) {
    if (t.name != name) continue;
    EXPECT_EQ(t.type, GgmlType::kF32) << name;
    std::vector<float> values(t.size_bytes / 4);
    EXPECT_TRUE((*object)
                    ->ReadAt(header->data_start + t.offset, t.size_bytes, reinterpret_cast<std::byte*>(values.data()))
                    .ok());
    return values;
  }
  ADD_FAILURE() << name << " not in " << path;
  return {};
}

int CountWarnings(RecordingContext& context, const std::string& code) {
  int n = 0;
  for (const auto& [c, tensor] : context.warnings()) n += c == code;
  return n;
}

TEST_F(LayoutQuantizeJobTest, RequantizingBnbInt8ReadsBackExactlyWhatItsKernelDequantizes) {
  const v1::QuantizeSpec first = Spec("bnb_int8");
  ASSERT_TRUE(Run(first).ok());
  v1::QuantizeSpec again;
  again.set_input(first.output());
  again.set_output(dir_.path() + "/back.gguf");
  again.set_scheme("F32");
  again.set_allow_requantize(true);
  absl::StatusOr<v1::JobResult> result = Run(again);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(CountWarnings(context_, "REQUANTIZED"), 14);
  Output int8 = Load(first.output() + "/model.safetensors");
  const std::string q = kQ;
  const std::string codes = int8.Data(q + ".weight");
  const std::string scb = int8.Data(q + ".SCB");
  const std::vector<float> back = GgufF32(again.output(), q + ".weight");
  ASSERT_EQ(back.size(), 64u * 64u);
  for (size_t row = 0; row < 64; ++row) {
    float scale, expected[64];
    std::memcpy(&scale, scb.data() + row * 4, 4);
    BnbInt8DequantizeRow(reinterpret_cast<const int8_t*>(codes.data()) + row * 64, 64, scale, expected);
    ASSERT_EQ(std::memcmp(back.data() + row * 64, expected, sizeof expected), 0) << row;
  }
  // The companions are gone; the other tensors came through.
  LocalObjectStore store;
  auto header = ReadGgufHeader(**store.OpenForRead(again.output()));
  for (const GgufTensor& t : header->tensors) EXPECT_EQ(t.name.find("SCB"), std::string::npos) << t.name;
  EXPECT_EQ(header->tensors.size(), values_.size());
}

TEST_F(LayoutQuantizeJobTest, RequantizingBetweenLayoutsAndIntoGguf) {
  v1::QuantizeSpec nf4 = Spec("bnb_nf4");
  nf4.set_double_quant(true);
  ASSERT_TRUE(Run(nf4).ok());
  const v1::QuantizeSpec glm = Spec("chatglm_int4");
  ASSERT_TRUE(Run(glm).ok());
  const v1::QuantizeSpec quanto = Spec("quanto_int8");
  ASSERT_TRUE(Run(quanto).ok());
  for (const v1::QuantizeSpec* from : std::vector<const v1::QuantizeSpec*>{&nf4, &glm, &quanto}) {
    v1::QuantizeSpec to = Spec("bnb_int8");
    to.set_input(from->output());
    to.set_output(from->output() + "-as-int8");
    to.set_allow_requantize(true);
    absl::StatusOr<v1::JobResult> result = Run(to);
    ASSERT_TRUE(result.ok()) << from->scheme() << ": " << result.status();
    Output out = Load(to.output() + "/model.safetensors");
    const std::string q = kQ;
    ASSERT_NE(out.Find(q + ".SCB"), nullptr) << from->scheme();
    EXPECT_EQ(out.Find(q + ".weight")->shape, (std::vector<uint64_t>{64, 64})) << from->scheme();
    EXPECT_EQ(out.Find(q + ".weight_scale"), nullptr);
    EXPECT_EQ(out.Find(q + ".weight.absmax"), nullptr);
    // Far from the original: two quantizations, but still the same weight.
    const nlohmann::json manifest = ReadJson(to.output() + "/modelsmith.manifest.json");
    EXPECT_GT(manifest["quality"][0]["snr_db"].get<double>(), 30.0) << from->scheme();

    v1::QuantizeSpec gguf = to;
    gguf.set_scheme("Q8_0");
    gguf.set_output(from->output() + ".gguf");
    ASSERT_TRUE(Run(gguf).ok()) << from->scheme();
  }
}

TEST_F(LayoutQuantizeJobTest, RequantizingWhatCannotBeReadBackSaysWhy) {
  const v1::QuantizeSpec quanto = Spec("quanto_int4");  // 64-column rows: groups of 64 look like rows
  ASSERT_TRUE(Run(quanto).ok());
  v1::QuantizeSpec again = Spec("Q8_0");
  again.set_input(quanto.output());
  again.set_output(dir_.path() + "/x.gguf");
  again.set_allow_requantize(true);
  absl::Status status = Run(again).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(ReasonOf(status), "REQUANTIZE_UNSUPPORTED");

  // ChatGLM int4 and int8 look alike without config.json's quantization_bit.
  const v1::QuantizeSpec glm = Spec("chatglm_int8");
  ASSERT_TRUE(Run(glm).ok());
  fs::remove(glm.output() + "/config.json");
  again.set_input(glm.output());
  status = Run(again).status();
  EXPECT_EQ(ReasonOf(status), "REQUANTIZE_UNSUPPORTED") << status;
}

TEST(Fp8, DecodesE4M3FnAndE5M2Exactly) {
  EXPECT_EQ(Fp8E4M3ToFp32(0x7E), 448.0f);        // S.1111.110: the largest
  EXPECT_EQ(Fp8E4M3ToFp32(0x01), 1.0f / 512);    // the smallest subnormal, 2^-9
  EXPECT_EQ(Fp8E4M3ToFp32(0x38), 1.0f);          // 0.0111.000
  EXPECT_EQ(Fp8E4M3ToFp32(0xC4), -3.0f);         // 1.1000.100: -1.5 * 2
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFp32(0x7F)));  // no infinity, S.1111.111 is NaN
  EXPECT_EQ(Fp8E5M2ToFp32(0x7B), 57344.0f);
  EXPECT_TRUE(std::isinf(Fp8E5M2ToFp32(0x7C)));
  EXPECT_EQ(Fp8E5M2ToFp32(0x3C), 1.0f);
}

TEST_F(LayoutQuantizeJobTest, BadSpecsNameTheField) {
  v1::QuantizeSpec spec = Spec("bnb_nf4");
  spec.set_block_size(48);
  EXPECT_EQ(ContextOf(Run(spec).status())["field"], "quantize.block_size");
  spec = Spec("bnb_int8");
  spec.set_double_quant(true);
  EXPECT_EQ(ContextOf(Run(spec).status())["field"], "quantize.double_quant");
  spec = Spec("quanto_int4");
  spec.set_output(dir_.path() + "/x.gguf");
  EXPECT_EQ(ReasonOf(Run(spec).status()), "INVALID_OUTPUT");
}

TEST_F(LayoutQuantizeJobTest, MissingConfigWarnsAndUnfitTensorIsKept) {
  fs::remove(dir_.path() + "/in/config.json");
  v1::QuantizeSpec spec = Spec("quanto_int4");
  spec.set_group_size(128);  // 64-column weights cannot take groups of 128
  absl::StatusOr<v1::JobResult> result = Run(spec);
  ASSERT_TRUE(result.ok()) << result.status();
  int missing = 0, unfit = 0;
  for (const auto& [code, tensor] : context_.warnings()) {
    missing += code == "CONFIG_MISSING";
    unfit += code == "TENSOR_NOT_QUANTIZABLE";
  }
  EXPECT_EQ(missing, 1);
  EXPECT_EQ(unfit, 14);  // every linear weight: 64 and 192 columns are not whole groups of 128
  spec.set_output(dir_.path() + "/strict");
  spec.set_strict(true);
  EXPECT_EQ(ReasonOf(Run(spec).status()), "TENSOR_NOT_QUANTIZABLE");
}

}  // namespace
}  // namespace modelsmith
