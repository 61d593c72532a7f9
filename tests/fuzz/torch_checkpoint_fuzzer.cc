// libFuzzer target: any bytes as a torch checkpoint (zip record table, then the pickle and the
// storages). It must return tensors or an error, never crash, hang or overallocate; every
// accepted tensor's bytes must lie inside the file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tests/support/memory_object.h"
#include "workers/formats/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  modelsmith::MemoryObject file(std::string(reinterpret_cast<const char*>(data), size), "fuzz.bin");
  absl::StatusOr<modelsmith::TorchCheckpoint> checkpoint = modelsmith::ReadTorchCheckpoint(file);
  if (!checkpoint.ok()) return 0;
  for (const modelsmith::TensorInfo& t : checkpoint->tensors) {
    if (t.strides.empty() && (t.data_offset > size || t.size_bytes > size - t.data_offset)) std::abort();
  }
  return 0;
}
