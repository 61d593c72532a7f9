// libFuzzer target: any bytes as a legacy llama-imatrix .dat file. It must return a matrix or an
// error, never crash, hang or allocate from an unchecked count. When it accepts a matrix, every
// entry has a name and at least one value, and every value is finite.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tests/support/memory_object.h"
#include "workers/formats/imatrix.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  modelsmith::MemoryObject file(std::string(reinterpret_cast<const char*>(data), size), "fuzz.dat");
  absl::StatusOr<modelsmith::ImportanceMatrix> matrix = modelsmith::ReadLegacyImatrix(file);
  if (!matrix.ok()) return 0;
  uint64_t values = 0;
  for (const auto& [name, entry] : matrix->values) {
    if (name.empty() || entry.empty()) std::abort();
    for (float v : entry) {
      if (!std::isfinite(v)) std::abort();
    }
    values += entry.size();
  }
  if (values * sizeof(float) > size) std::abort();  // nothing beyond what the file holds
  return 0;
}
