// libFuzzer target: any bytes as a .safetensors file (the length prefix, then the JSON header).
// It must return a header or an error, never crash, hang or allocate from an unchecked length.
// When it accepts a header, every tensor must lie inside the file, past the header, and the
// ranges must not overlap (the reader's own promise, re-checked without wrapping).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/memory_object.h"
#include "workers/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  modelsmith::MemoryObject file(std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  absl::StatusOr<modelsmith::SafetensorsHeader> header = modelsmith::ReadSafetensorsHeader(file);
  if (!header.ok()) return 0;
  if (header->data_start > size) std::abort();
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const modelsmith::TensorInfo& t : header->tensors) {
    uint64_t end = 0;
    if (t.data_offset < header->data_start || __builtin_add_overflow(t.data_offset, t.size_bytes, &end) || end > size) {
      std::abort();
    }
    ranges.emplace_back(t.data_offset, end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) std::abort();
  }
  return 0;
}
