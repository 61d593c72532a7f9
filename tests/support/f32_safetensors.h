// Float32 safetensors files written and read by tests independently of the service's own
// writer and reader: random normal tensors, a header built with nlohmann::json.
#ifndef MODELSMITH_TESTS_SUPPORT_F32_SAFETENSORS_H_
#define MODELSMITH_TESTS_SUPPORT_F32_SAFETENSORS_H_

#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/support/read_file.h"

namespace modelsmith::testing {

struct F32Tensor {
  std::string name;
  std::vector<uint64_t> shape;
  std::vector<float> values;
};

inline F32Tensor Random(const std::string& name, std::vector<uint64_t> shape, uint32_t seed) {
  F32Tensor t{name, shape, {}};
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  for (uint64_t i = 0; i < n; ++i) t.values.push_back(normal(rng));
  return t;
}

// A safetensors file written here, independently of the service's writer.
inline void WriteSafetensors(const std::string& path, const std::vector<F32Tensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const F32Tensor& t : tensors) {
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.values.size() * 4}}};
    offset += t.values.size() * 4;
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text += ' ';
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = text.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << text;
  for (const F32Tensor& t : tensors) out.write(reinterpret_cast<const char*>(t.values.data()), t.values.size() * 4);
}

// A tensor of a safetensors file written by the service, read here.
inline std::vector<float> ReadTensor(const std::string& path, const std::string& name) {
  const std::string file = ReadFile(path);
  uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  const nlohmann::json header = nlohmann::json::parse(file.substr(8, n));
  const uint64_t begin = header.at(name)["data_offsets"][0], end = header.at(name)["data_offsets"][1];
  std::vector<float> v((end - begin) / 4);
  std::memcpy(v.data(), file.data() + 8 + n + begin, end - begin);
  return v;
}

}  // namespace modelsmith::testing

#endif  // MODELSMITH_TESTS_SUPPORT_F32_SAFETENSORS_H_
