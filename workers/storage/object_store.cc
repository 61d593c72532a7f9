#include "workers/storage/object_store.h"

#include <algorithm>

namespace modelsmith {

absl::Status ObjectWriter::AppendFrom(const RandomAccessObject& source, uint64_t offset, uint64_t length) {
  constexpr uint64_t kPieceBytes = 4 << 20;
  std::vector<std::byte> buffer(std::min(length, kPieceBytes));
  while (length > 0) {
    const size_t piece = static_cast<size_t>(std::min<uint64_t>(length, buffer.size()));
    if (absl::Status s = source.ReadAt(offset, piece, buffer.data()); !s.ok()) return s;
    if (absl::Status s = Append({buffer.data(), piece}); !s.ok()) return s;
    offset += piece;
    length -= piece;
  }
  return absl::OkStatus();
}

}  // namespace modelsmith
