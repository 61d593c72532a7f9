// Our ggml quantizers against llama.cpp's own output, byte for byte: tests/data/golden/gguf (a
// copy of the team's shared/golden/gguf, kept in the repository so a fresh clone tests alone) holds
// an F32 input and what `llama-quantize --pure` made of it for each type (see its README). Tensors
// are matched by name.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "workers/formats/gguf.h"
#include "workers/quant/ggml_kquants.h"
#include "workers/quant/ggml_legacy.h"
#include "workers/storage/local_object_store.h"

namespace modelsmith {
namespace {

using QuantizeRow = void (*)(const float*, size_t, uint8_t*);
using DequantizeRow = void (*)(const uint8_t*, size_t, float*);

struct Kernel {
  const char* type;
  QuantizeRow quantize;
  DequantizeRow dequantize;
  // Bound on the round-trip error relative to the tensor's largest magnitude: about half a
  // quantization step at the bit width, with room for the FP16 scales and the K-quants' searches.
  double max_relative_error;
};

const Kernel kKernels[] = {
    {"Q8_0", QuantizeRowQ8_0, DequantizeRowQ8_0, 1.0 / 200}, {"Q4_0", QuantizeRowQ4_0, DequantizeRowQ4_0, 1.0 / 7},
    {"Q4_1", QuantizeRowQ4_1, DequantizeRowQ4_1, 1.0 / 7},   {"Q5_0", QuantizeRowQ5_0, DequantizeRowQ5_0, 1.0 / 14},
    {"Q5_1", QuantizeRowQ5_1, DequantizeRowQ5_1, 1.0 / 14},
};

std::string GoldenDir() { return std::string(MODELSMITH_SOURCE_DIR) + "/tests/data/golden/gguf"; }

struct LoadedGguf {
  std::unique_ptr<RandomAccessObject> object;
  GgufFile header;
  std::string Data(const GgufTensor& t) const {
    std::string bytes(t.size_bytes, '\0');
    EXPECT_TRUE(
        object->ReadAt(header.data_start + t.offset, t.size_bytes, reinterpret_cast<std::byte*>(bytes.data())).ok());
    return bytes;
  }
  const GgufTensor* Find(const std::string& name) const {
    for (const GgufTensor& t : header.tensors) {
      if (t.name == name) return &t;
    }
    return nullptr;
  }
};

LoadedGguf Load(const std::string& path) {
  LocalObjectStore store;
  LoadedGguf loaded;
  auto object = store.OpenForRead(path);
  EXPECT_TRUE(object.ok()) << path << ": " << object.status() << " (the golden files live in tests/data/golden/gguf)";
  if (!object.ok()) return loaded;
  loaded.object = *std::move(object);
  auto header = ReadGgufHeader(*loaded.object);
  EXPECT_TRUE(header.ok()) << header.status();
  if (header.ok()) loaded.header = *std::move(header);
  return loaded;
}

class GgufGoldenTest : public ::testing::TestWithParam<Kernel> {};

TEST_P(GgufGoldenTest, QuantizedTensorsMatchLlamaCppByteForByte) {
  const Kernel& kernel = GetParam();
  LoadedGguf input = Load(GoldenDir() + "/input-f32.gguf");
  LoadedGguf expected = Load(GoldenDir() + "/expected-" + std::string(kernel.type) + ".gguf");
  ASSERT_TRUE(input.object && expected.object);
  int compared = 0;
  for (const GgufTensor& want : expected.header.tensors) {
    std::optional<GgmlTypeTraits> traits = GgmlTraits(static_cast<uint32_t>(want.type));
    if (!traits || traits->name != kernel.type) continue;
    const GgufTensor* source = input.Find(want.name);
    ASSERT_NE(source, nullptr) << want.name;
    ASSERT_EQ(source->type, GgmlType::kF32);
    ASSERT_EQ(source->ne, want.ne);
    const std::string raw = input.Data(*source);
    std::vector<float> values(raw.size() / 4);
    std::memcpy(values.data(), raw.data(), raw.size());
    std::string got(want.size_bytes, '\0');
    const uint64_t row = want.ne[0];
    const uint64_t row_bytes = *GgmlRowBytes(want.type, row);
    for (uint64_t r = 0; r < values.size() / row; ++r) {
      kernel.quantize(values.data() + r * row, row, reinterpret_cast<uint8_t*>(got.data()) + r * row_bytes);
    }
    const std::string reference = expected.Data(want);
    size_t first_difference = 0;
    while (first_difference < got.size() && got[first_difference] == reference[first_difference]) ++first_difference;
    EXPECT_EQ(first_difference, got.size())
        << kernel.type << " " << want.name << ": first difference at byte " << first_difference << " (block "
        << first_difference / traits->block_bytes << ")";
    ++compared;

    // Dequantizing our bytes comes back within the type's error bound for every element.
    std::vector<float> back(values.size());
    for (uint64_t r = 0; r < values.size() / row; ++r) {
      kernel.dequantize(reinterpret_cast<const uint8_t*>(got.data()) + r * row_bytes, row, back.data() + r * row);
    }
    double max_error = 0, max_value = 0;
    for (size_t i = 0; i < values.size(); ++i) {
      max_error = std::max(max_error, std::fabs(double(values[i]) - back[i]));
      max_value = std::max(max_value, std::fabs(double(values[i])));
    }
    EXPECT_LE(max_error, max_value * kernel.max_relative_error + 1e-6) << want.name;
  }
  EXPECT_GE(compared, 7) << "no tensor of type " << kernel.type << " in the golden file";
}

const Kernel kSuperBlockKernels[] = {
    {"Q2_K", QuantizeRowQ2_K, DequantizeRowQ2_K, 0.45},     {"Q3_K", QuantizeRowQ3_K, DequantizeRowQ3_K, 0.3},
    {"Q4_K", QuantizeRowQ4_K, DequantizeRowQ4_K, 1.0 / 6},  {"Q5_K", QuantizeRowQ5_K, DequantizeRowQ5_K, 1.0 / 12},
    {"Q6_K", QuantizeRowQ6_K, DequantizeRowQ6_K, 1.0 / 24},
};

INSTANTIATE_TEST_SUITE_P(KQuants, GgufGoldenTest, ::testing::ValuesIn(kSuperBlockKernels),
                         [](const ::testing::TestParamInfo<Kernel>& info) { return std::string(info.param.type); });

INSTANTIATE_TEST_SUITE_P(Legacy, GgufGoldenTest, ::testing::ValuesIn(kKernels),
                         [](const ::testing::TestParamInfo<Kernel>& info) { return std::string(info.param.type); });

TEST(GgufReader, ReadsTheGoldenInput) {
  LoadedGguf input = Load(GoldenDir() + "/input-f32.gguf");
  ASSERT_TRUE(input.object);
  EXPECT_EQ(input.header.version, 3u);
  EXPECT_EQ(input.header.alignment, 32u);
  EXPECT_EQ(input.header.Find("general.architecture")->AsString(), "llama");
  EXPECT_EQ(input.header.Find("llama.embedding_length")->AsUnsigned(), 256u);
  const GgufTensor* gate = input.Find("blk.0.ffn_gate.weight");
  ASSERT_NE(gate, nullptr);
  EXPECT_EQ(gate->Shape(), (std::vector<uint64_t>{512, 256}));  // PyTorch order [out, in]
  EXPECT_EQ(gate->size_bytes, 512u * 256u * 4u);
}

}  // namespace
}  // namespace modelsmith
