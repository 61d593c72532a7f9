// TensorInfo: where one tensor's bytes live and what they mean. No I/O.
#ifndef MODELSMITH_WORKERS_TENSOR_TENSOR_INFO_H_
#define MODELSMITH_WORKERS_TENSOR_TENSOR_INFO_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "workers/tensor/dtype.h"

namespace modelsmith {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<uint64_t> shape;  // row-major; empty for a scalar
  // Byte range of the data within its file, absolute (header included).
  uint64_t data_offset = 0;
  uint64_t size_bytes = 0;
  // Index into the owning model's file list.
  uint32_t file_index = 0;
  // For GGUF tensors, the ggml type (ggml_types.h) as stored; `dtype` is then F32/F16/BF16 for
  // those types and U8 (opaque bytes) for quantized ones.
  std::optional<uint32_t> ggml_type;
  // For a non-contiguous view in a torch checkpoint, the element strides (row-major otherwise,
  // and then empty): data_offset is element [0, ..., 0] and size_bytes the logical size. Read
  // such a tensor with ReadTensorBytes (formats/tensor_reader.h), never as one byte range.
  std::vector<uint64_t> strides;
};

// Number of elements (1 for a scalar), or nullopt on uint64 overflow.
std::optional<uint64_t> ElementCount(std::span<const uint64_t> shape);

// Bytes that `shape` of `dtype` occupies, or nullopt on overflow or when the bit count is not a
// multiple of 8 (safetensors' MisalignedSlice).
std::optional<uint64_t> StorageBytes(DType dtype, std::span<const uint64_t> shape);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_TENSOR_TENSOR_INFO_H_
