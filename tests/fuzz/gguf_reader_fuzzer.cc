// libFuzzer target: any bytes through the GGUF reader. It must return a header or an error; a
// crash, a sanitizer report, a hang or an allocation beyond -rss_limit_mb is a bug. When it accepts
// a header, the tensor table it returns must lie inside the file and be consistent with itself.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tests/support/memory_object.h"
#include "workers/formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  modelsmith::MemoryObject file(std::string(reinterpret_cast<const char*>(data), size), "fuzz.gguf");
  absl::StatusOr<modelsmith::GgufFile> header = modelsmith::ReadGgufHeader(file);
  if (!header.ok()) return 0;
  for (const modelsmith::GgufTensor& t : header->tensors) {
    // The reader promised every tensor's bytes are inside the file. Checked without wrapping: a
    // size near 2^64 must not pass as a small end.
    uint64_t start = 0, end = 0;
    if (__builtin_add_overflow(header->data_start, t.offset, &start) ||
        __builtin_add_overflow(start, t.size_bytes, &end) || end > size) {
      std::abort();
    }
  }
  return 0;
}
