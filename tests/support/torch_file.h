// Writes torch.save-style checkpoints without torch, for tests and benchmarks that need inputs
// larger than the committed fixtures (tests/data/torch, made by torch itself): a zip of stored
// records under "<stem>/", each record's data 64-byte aligned through an "FB" padding extra field
// as PyTorchStreamWriter does, data.pkl a protocol-2 OrderedDict of _rebuild_tensor_v2 calls on
// typed storages, then byteorder and version. Contiguous tensors, one storage each. Zip32 only:
// the file must stay under 4 GiB.
#ifndef MODELSMITH_TESTS_SUPPORT_TORCH_FILE_H_
#define MODELSMITH_TESTS_SUPPORT_TORCH_FILE_H_

#include <cstdint>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "workers/tensor/tensor_info.h"

namespace modelsmith {

struct TorchTensorSpec {
  std::string name;
  DType dtype;  // F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL
  std::vector<uint64_t> shape;
};

namespace torch_file_internal {

inline void Put16(std::string& s, uint32_t v) { s.push_back(char(v & 0xFF)), s.push_back(char((v >> 8) & 0xFF)); }
inline void Put32(std::string& s, uint32_t v) { Put16(s, v & 0xFFFF), Put16(s, v >> 16); }

inline const char* StorageClass(DType t) {
  switch (t) {
    case DType::kF32: return "FloatStorage";
    case DType::kF16: return "HalfStorage";
    case DType::kBF16: return "BFloat16Storage";
    case DType::kF64: return "DoubleStorage";
    case DType::kI64: return "LongStorage";
    case DType::kI32: return "IntStorage";
    case DType::kI16: return "ShortStorage";
    case DType::kI8: return "CharStorage";
    case DType::kU8: return "ByteStorage";
    case DType::kBool: return "BoolStorage";
    default: throw std::invalid_argument("no torch storage class for this dtype");
  }
}

inline std::string Unicode(const std::string& s) {
  std::string out = "X";
  Put32(out, static_cast<uint32_t>(s.size()));
  return out + s;
}

inline std::string Int(uint64_t v) {
  if (v < (1u << 31)) {
    std::string out = "J";
    Put32(out, static_cast<uint32_t>(v));
    return out;
  }
  std::string out = "\x8a\x08";
  for (int i = 0; i < 8; ++i) out.push_back(char((v >> (8 * i)) & 0xFF));
  return out;
}

inline std::string Pickle(const std::vector<TorchTensorSpec>& tensors) {
  std::string p =
      "\x80\x02"
      "ccollections\nOrderedDict\n"
      ")R(";
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TorchTensorSpec& t = tensors[i];
    uint64_t numel = 1;
    for (uint64_t d : t.shape) numel *= d;
    p += Unicode(t.name) +
         "ctorch._utils\n_rebuild_tensor_v2\n"
         "((" +
         Unicode("storage") + "ctorch\n" + StorageClass(t.dtype) + "\n" + Unicode(std::to_string(i)) + Unicode("cpu") +
         Int(numel) + "tQ" + Int(0) + "(";
    for (uint64_t d : t.shape) p += Int(d);
    p += "t(";
    uint64_t stride = 1;
    std::vector<uint64_t> strides(t.shape.size());
    for (size_t d = t.shape.size(); d-- > 0;) strides[d] = stride, stride *= t.shape[d];
    for (uint64_t s : strides) p += Int(s);
    p += "t\x89"
         "ccollections\nOrderedDict\n)R"
         "tR";
  }
  return p + "u.";
}

}  // namespace torch_file_internal

// Fills `size` bytes of tensor `tensor` starting at byte `offset` of it into `data`; called in
// order, with pieces of at most 64 MiB.
using TorchFill = std::function<void(size_t tensor, uint64_t offset, char* data, size_t size)>;

inline void WriteTorchCheckpoint(const std::string& path, const std::string& stem,
                                 const std::vector<TorchTensorSpec>& tensors, const TorchFill& fill) {
  using namespace torch_file_internal;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::string central;
  uint64_t offset = 0;
  uint32_t entries = 0;
  auto record = [&](const std::string& name, uint64_t size, const std::function<void()>& write_data) {
    // Local header + name + "FB" padding so that the data starts on a 64-byte boundary.
    const uint64_t fixed = 30 + name.size() + 4;
    const uint64_t pad = (64 - (offset + fixed) % 64) % 64;
    std::string header;
    Put32(header, 0x04034b50), Put16(header, 20), Put16(header, 0), Put16(header, 0), Put32(header, 0),
        Put32(header, 0);
    Put32(header, static_cast<uint32_t>(size)), Put32(header, static_cast<uint32_t>(size));
    Put16(header, static_cast<uint32_t>(name.size())), Put16(header, static_cast<uint32_t>(4 + pad));
    header += name;
    header += "FB";
    Put16(header, static_cast<uint32_t>(pad));
    header.append(pad, 'Z');
    out << header;
    write_data();
    Put32(central, 0x02014b50), Put16(central, 20), Put16(central, 20), Put16(central, 0), Put16(central, 0);
    Put32(central, 0), Put32(central, 0), Put32(central, static_cast<uint32_t>(size)),
        Put32(central, static_cast<uint32_t>(size));
    Put16(central, static_cast<uint32_t>(name.size())), Put16(central, 0), Put16(central, 0), Put16(central, 0);
    Put16(central, 0), Put32(central, 0), Put32(central, static_cast<uint32_t>(offset));
    central += name;
    offset += header.size() + size;
    ++entries;
  };
  const std::string pickle = Pickle(tensors);
  record(stem + "/data.pkl", pickle.size(), [&] { out << pickle; });
  record(stem + "/byteorder", 6, [&] { out << "little"; });
  std::vector<char> buffer(64 << 20);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t size = *StorageBytes(tensors[i].dtype, tensors[i].shape);
    record(stem + "/data/" + std::to_string(i), size, [&] {
      for (uint64_t done = 0; done < size;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), size - done));
        fill(i, done, buffer.data(), n);
        out.write(buffer.data(), static_cast<std::streamsize>(n));
        done += n;
      }
    });
  }
  record(stem + "/version", 2, [&] { out << "3\n"; });
  if (offset + central.size() >= (uint64_t{1} << 32)) throw std::length_error("torch test file over 4 GiB");
  std::string end;
  Put32(end, 0x06054b50), Put16(end, 0), Put16(end, 0), Put16(end, entries), Put16(end, entries);
  Put32(end, static_cast<uint32_t>(central.size())), Put32(end, static_cast<uint32_t>(offset)), Put16(end, 0);
  out << central << end;
}

}  // namespace modelsmith

#endif  // MODELSMITH_TESTS_SUPPORT_TORCH_FILE_H_
