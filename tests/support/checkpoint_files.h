// Writes small safetensors checkpoints for engine tests: a header from the writer under test and
// deterministic pseudo-random tensor bytes, so tests can compare output bytes with input bytes.
#ifndef MODELSMITH_TESTS_SUPPORT_CHECKPOINT_FILES_H_
#define MODELSMITH_TESTS_SUPPORT_CHECKPOINT_FILES_H_

#include <cstdint>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "workers/formats/safetensors.h"
#include "workers/quant/half.h"

namespace modelsmith {

struct TestTensor {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
};

// Deterministic bytes for a tensor (depends on its name only).
inline std::string TensorBytes(const std::string& name, uint64_t size) {
  std::string out(size, '\0');
  uint64_t state = std::hash<std::string>{}(name) | 1;
  for (uint64_t i = 0; i < size; ++i) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    out[i] = static_cast<char>(state);
  }
  return out;
}

// Writes `tensors` in the given order (no reordering) to `path`; returns the data per tensor.
inline std::map<std::string, std::string> WriteCheckpoint(const std::string& path,
                                                          const std::vector<TestTensor>& tensors,
                                                          const std::map<std::string, std::string>& metadata = {
                                                              {"format", "pt"}}) {
  std::vector<SafetensorsEntry> entries;
  std::map<std::string, std::string> data;
  for (const TestTensor& t : tensors) {
    uint64_t size = *StorageBytes(t.dtype, t.shape);
    entries.push_back({t.name, t.dtype, t.shape, size});
    data[t.name] = TensorBytes(t.name, size);
  }
  std::ofstream out(path, std::ios::binary);
  out << SerializeSafetensorsHeader(entries, metadata);
  for (const TestTensor& t : tensors) out << data[t.name];
  return data;
}

// Writes `tensors` with normally distributed float values (mean 0, sd 0.02, seeded by the name) in
// their F32 / F16 / BF16 dtype; returns the values as F32 per tensor.
std::map<std::string, std::vector<float>> WriteFloatCheckpoint(const std::string& path,
                                                               const std::vector<TestTensor>& tensors);

// A Llama-like state dict: embed, `layers` blocks of 9 tensors, norm, head.
inline std::vector<TestTensor> LlamaLikeTensors(int layers, uint64_t hidden, uint64_t vocab) {
  std::vector<TestTensor> t = {{"model.embed_tokens.weight", DType::kF16, {vocab, hidden}}};
  for (int i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
      t.push_back({p + "self_attn." + proj + ".weight", DType::kF16, {hidden, hidden}});
    }
    t.push_back({p + "mlp.gate_proj.weight", DType::kF16, {hidden * 3, hidden}});
    t.push_back({p + "mlp.up_proj.weight", DType::kF16, {hidden * 3, hidden}});
    t.push_back({p + "mlp.down_proj.weight", DType::kF16, {hidden, hidden * 3}});
    t.push_back({p + "input_layernorm.weight", DType::kF32, {hidden}});
    t.push_back({p + "post_attention_layernorm.weight", DType::kF32, {hidden}});
  }
  t.push_back({"model.norm.weight", DType::kF32, {hidden}});
  t.push_back({"lm_head.weight", DType::kF16, {vocab, hidden}});
  return t;
}

inline std::map<std::string, std::vector<float>> WriteFloatCheckpoint(const std::string& path,
                                                                      const std::vector<TestTensor>& tensors) {
  std::vector<SafetensorsEntry> entries;
  std::map<std::string, std::vector<float>> values;
  std::map<std::string, std::string> bytes;
  for (const TestTensor& t : tensors) {
    const uint64_t size = *StorageBytes(t.dtype, t.shape);
    entries.push_back({t.name, t.dtype, t.shape, size});
    const uint64_t n = *ElementCount(t.shape);
    std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(t.name)));
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float>& v = values[t.name];
    std::string& b = bytes[t.name];
    for (uint64_t i = 0; i < n; ++i) {
      const float x = normal(rng);
      if (t.dtype == DType::kF32) {
        v.push_back(x);
        b.append(reinterpret_cast<const char*>(&x), 4);
      } else {
        const uint16_t h = t.dtype == DType::kF16 ? Fp32ToFp16(x) : Fp32ToBf16(x);
        v.push_back(t.dtype == DType::kF16 ? Fp16ToFp32(h) : Bf16ToFp32(h));
        b.append(reinterpret_cast<const char*>(&h), 2);
      }
    }
  }
  std::ofstream out(path, std::ios::binary);
  out << SerializeSafetensorsHeader(entries, {{"format", "pt"}});
  for (const TestTensor& t : tensors) out << bytes[t.name];
  return values;
}

}  // namespace modelsmith

#endif  // MODELSMITH_TESTS_SUPPORT_CHECKPOINT_FILES_H_
