// GGUF: the llama.cpp / ggml model file (ggml docs/gguf.md, include/gguf.h; formats.md §4).
//
// Layout (little-endian):
//   u32 magic "GGUF" (47 47 55 46) | u32 version (2 or 3) | u64 tensor_count | u64 kv_count
//   kv_count x { string key | u32 value_type | value }
//       string = u64 length + bytes (no NUL); value types: 0 U8 1 I8 2 U16 3 I16 4 U32 5 I32
//       6 F32 7 BOOL(0/1) 8 STRING 9 ARRAY(u32 elem_type, u64 count, elems; nestable) 10 U64
//       11 I64 12 F64
//   tensor_count x { string name (< 64 bytes) | u32 n_dims (1..4) | n_dims x u64 ne (ne[0]
//       innermost: the PyTorch shape reversed) | u32 ggml_type | u64 offset (into the data) }
//   zero padding to `general.alignment` (UINT32 power of two, default 32), then the data section,
//   each tensor padded to the alignment. Offsets must be exactly the running padded sum in
//   tensor-info order.
// The reader checks all of that, counts against overflow, duplicate keys and names, block
// divisibility of ne[0], and that the data lies inside the file; every error names the field and
// the tensor or key.
#ifndef MODELSMITH_WORKERS_FORMATS_GGUF_H_
#define MODELSMITH_WORKERS_FORMATS_GGUF_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/tensor/ggml_types.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr uint32_t kGgmlQuantizationVersion = 2;

enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// One key/value pair, its value kept as the exact bytes of the file so it can be copied into
// another file unchanged.
struct GgufKv {
  std::string key;
  GgufValueType type;
  std::string value_bytes;

  std::optional<uint64_t> AsUnsigned() const;                     // U8/U16/U32/U64 (and non-negative signed)
  std::optional<std::string> AsString() const;                    // STRING
  std::optional<std::vector<std::string>> AsStringArray() const;  // ARRAY of STRING
  std::optional<std::vector<int32_t>> AsI32Array() const;         // ARRAY of INT32
  std::optional<std::vector<float>> AsF32Array() const;           // ARRAY of FLOAT32

  static GgufKv String(std::string key, const std::string& value);
  static GgufKv U32(std::string key, uint32_t value);
  static GgufKv I32(std::string key, int32_t value);
  static GgufKv F32(std::string key, float value);
  static GgufKv Bool(std::string key, bool value);
  static GgufKv StringArray(std::string key, const std::vector<std::string>& values);
  static GgufKv I32Array(std::string key, const std::vector<int32_t>& values);
  static GgufKv F32Array(std::string key, const std::vector<float>& values);
};

struct GgufTensor {
  std::string name;
  std::vector<uint64_t> ne;  // ggml order: ne[0] innermost
  GgmlType type;
  uint64_t offset = 0;  // relative to the data section
  uint64_t size_bytes = 0;

  std::vector<uint64_t> Shape() const;  // PyTorch order (ne reversed)
};

struct GgufFile {
  uint32_t version = 3;
  uint32_t alignment = kGgufDefaultAlignment;
  std::vector<GgufKv> kvs;
  std::vector<GgufTensor> tensors;  // in file order
  uint64_t data_start = 0;          // absolute offset of the data section

  const GgufKv* Find(const std::string& key) const;
};

// Reads and validates the header of `file`. INVALID_ARGUMENT with reason GGUF_* and context
// {file, tensor or key, field}.
absl::StatusOr<GgufFile> ReadGgufHeader(const RandomAccessObject& file);

// The header bytes (through the padding before the data section) for `tensors` laid out in
// order with `alignment`; fills in each tensor's offset. `kvs` must not contain
// general.alignment unless it equals `alignment`.
std::string SerializeGgufHeader(const std::vector<GgufKv>& kvs, std::vector<GgufTensor>& tensors,
                                uint32_t alignment = kGgufDefaultAlignment);

// The name of part `number` (1-based) of a `count`-way split, as gguf-split's llama_split_path
// writes it: "<prefix>-00002-of-00003.gguf".
std::string GgufSplitUri(absl::string_view prefix, uint64_t number, uint64_t count);

// A written GGUF's header re-read and its tensor table (names, shapes, types, offsets, sizes)
// compared with `expected`: DATA_LOSS (VERIFY_MISMATCH) when they differ.
absl::Status CheckGgufTensorTable(const RandomAccessObject& written, const std::vector<GgufTensor>& expected);

// Zero bytes that follow a tensor of `size_bytes` to reach the alignment.
uint64_t GgufPadding(uint64_t size_bytes, uint32_t alignment);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_GGUF_H_
