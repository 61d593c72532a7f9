// libFuzzer target: any bytes as a data.pkl through the restricted unpickler. It must return
// tensors or an error; a crash, a sanitizer report, a hang or an allocation beyond -rss_limit_mb
// is a bug. An accepted tensor must stay inside its storage.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "workers/formats/torch_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<modelsmith::TorchPickle> pickle =
      modelsmith::ReadTorchPickle(absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz.pkl");
  if (!pickle.ok()) return 0;
  for (const modelsmith::TorchTensor& t : pickle->tensors) {
    if (t.storage >= pickle->storages.size() || t.shape.size() != t.strides.size()) std::abort();
  }
  return 0;
}
