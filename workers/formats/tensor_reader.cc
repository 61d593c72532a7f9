#include "workers/formats/tensor_reader.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {

absl::Status ReadTensorBytes(const RandomAccessObject& file, const TensorInfo& tensor, uint64_t first, uint64_t count,
                             std::byte* dst) {
  if (first > tensor.size_bytes || count > tensor.size_bytes - first) {
    return MakeError(
        absl::StatusCode::kInternal, "INTERNAL",
        absl::StrCat("read of bytes [", first, ", +", count, ") past the end of tensor '", tensor.name, "'"));
  }
  if (tensor.strides.empty()) return file.ReadAt(tensor.data_offset + first, count, dst);
  const uint64_t width = DTypeBits(tensor.dtype) / 8;
  if (first % width != 0 || count % width != 0) {
    return MakeError(absl::StatusCode::kInternal, "INTERNAL",
                     absl::StrCat("partial-element read of strided tensor '", tensor.name, "'"));
  }
  if (count == 0) return absl::OkStatus();
  const size_t rank = tensor.shape.size();
  // The span of storage elements the view touches (the reader checked it lies in the storage).
  uint64_t span = 1;
  for (size_t d = 0; d < rank; ++d) span += (tensor.shape[d] - 1) * tensor.strides[d];
  const std::byte* base = nullptr;
  std::vector<std::byte> buffer;
  if (std::optional<std::span<const std::byte>> mapped = file.Mapped();
      mapped && tensor.data_offset + span * width <= mapped->size()) {
    base = mapped->data() + tensor.data_offset;
  } else {
    buffer.resize(span * width);
    if (absl::Status s = file.ReadAt(tensor.data_offset, buffer.size(), buffer.data()); !s.ok()) return s;
    base = buffer.data();
  }
  // Walk the logical elements in row-major order with a multi-index, starting at `first`.
  std::vector<uint64_t> index(rank, 0);
  uint64_t rest = first / width;
  for (size_t d = rank; d-- > 0;) {
    index[d] = rest % tensor.shape[d];
    rest /= tensor.shape[d];
  }
  uint64_t offset = 0;
  for (size_t d = 0; d < rank; ++d) offset += index[d] * tensor.strides[d];
  const uint64_t elements = count / width;
  const uint64_t inner = rank == 0 ? 1 : tensor.shape[rank - 1];
  const uint64_t inner_stride = rank == 0 ? 0 : tensor.strides[rank - 1];
  for (uint64_t done = 0; done < elements;) {
    // The rest of the innermost row in one go.
    const uint64_t run = std::min<uint64_t>(elements - done, rank == 0 ? 1 : inner - index[rank - 1]);
    if (inner_stride == 1) {
      std::memcpy(dst + done * width, base + offset * width, run * width);
    } else {
      for (uint64_t i = 0; i < run; ++i)
        std::memcpy(dst + (done + i) * width, base + (offset + i * inner_stride) * width, width);
    }
    done += run;
    if (rank == 0 || done == elements) break;
    // Carry into the outer dimensions.
    offset += run * inner_stride;
    index[rank - 1] += run;
    for (size_t d = rank; d-- > 0 && index[d] == tensor.shape[d];) {
      offset -= index[d] * tensor.strides[d];
      index[d] = 0;
      if (d == 0) break;
      ++index[d - 1];
      offset += tensor.strides[d - 1];
    }
  }
  return absl::OkStatus();
}

}  // namespace modelsmith
