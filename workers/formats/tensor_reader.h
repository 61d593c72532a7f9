// Reading a tensor's logical bytes (row-major, as safetensors stores them) whatever its layout in
// the file: one ranged read for a contiguous tensor, a gather for a strided view of a torch
// storage (TensorInfo::strides).
#ifndef MODELSMITH_WORKERS_FORMATS_TENSOR_READER_H_
#define MODELSMITH_WORKERS_FORMATS_TENSOR_READER_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "workers/storage/object_store.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

// Reads logical bytes [first, first + count) of `tensor` from `file` into `dst`. For a strided
// view, `first` and `count` must be whole elements; the storage span the view touches is read
// once per call (from the mapping where the store has one), so read strided tensors in one call.
absl::Status ReadTensorBytes(const RandomAccessObject& file, const TensorInfo& tensor, uint64_t first, uint64_t count,
                             std::byte* dst);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_TENSOR_READER_H_
