// safetensors: reading and writing the header of a .safetensors file.
//
// Layout (huggingface/safetensors README "Format", checked against safetensors/src/tensor.rs):
//   bytes [0, 8)        N, u64 little-endian: the header length. N <= 100,000,000.
//   bytes [8, 8+N)      UTF-8 JSON object. Leading and trailing JSON whitespace is allowed
//                       (writers pad with spaces so data starts 8-aligned).
//                       "__metadata__": {string: string}  (optional; "format": "pt" for torch)
//                       "<name>": {"dtype": "F16", "shape": [d0, d1, ...],
//                                  "data_offsets": [BEGIN, END]}
//   bytes [8+N, EOF)    the byte buffer; [BEGIN, END) of each tensor is relative to its start.
// Validity: after sorting by offsets, the ranges chain from 0 with no gap or overlap and end
// exactly at EOF; END-BEGIN == elements*bits/8 (computed without overflow, a whole number of
// bytes); names are unique; dtypes are known.
//
// The writer reproduces the reference serializer (safetensors `prepare`/`serialize`): compact
// JSON, "__metadata__" first with keys sorted, tensors in data order, fields in the order
// dtype, shape, data_offsets, padded with spaces to a multiple of 8.
#ifndef MODELSMITH_WORKERS_FORMATS_SAFETENSORS_H_
#define MODELSMITH_WORKERS_FORMATS_SAFETENSORS_H_

#include "absl/strings/string_view.h"
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/storage/object_store.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct SafetensorsHeader {
  uint64_t header_bytes = 0;  // N
  uint64_t data_start = 0;    // 8 + N
  // Sorted by data offset. TensorInfo::data_offset is absolute (data_start + BEGIN).
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
};

// Validates the header `json` (the N bytes after the length prefix) of a file of `file_size`
// bytes. `file_name` names the file in errors. Errors are INVALID_ARGUMENT with a reason
// "SAFETENSORS_*" and context {file, tensor, field}.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json, uint64_t file_size,
                                                         absl::string_view file_name);

// Reads the length prefix and header of `file` (two ranged reads) and validates them.
absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const RandomAccessObject& file);

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  uint64_t size_bytes;
};

// The order the reference writer lays tensors out in: dtype descending in DType order (largest
// alignment first), then name ascending (bytewise).
void SortLikeReferenceWriter(std::vector<SafetensorsEntry>& entries);

// The complete header bytes (length prefix + padded JSON) for `entries` laid out contiguously in
// the given order. The data section that follows is exactly the sum of size_bytes.
std::string SerializeSafetensorsHeader(std::span<const SafetensorsEntry> entries,
                                       const std::map<std::string, std::string>& metadata);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_SAFETENSORS_H_
