// libFuzzer target: any bytes as a Core ML package's model and weight file, through what bisect
// and inspect run on a package: the model protobuf parse and its format checks, the weight file's
// header and record walk, and the program index (definitions before use, blob references,
// constexpr chains, weight attribution). The input is a 4-byte little-endian model length, the
// model bytes, then the weight file. Errors are fine; a crash, a hang or an allocation beyond
// -rss_limit_mb is a bug. An accepted index must place every weight at a compute op or none, and
// every compute op exactly once.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "workers/formats/coreml_package.h"
#include "workers/formats/mil_program.h"
#include "workers/storage/local_object_store.h"

namespace {

const std::string& PackageDir() {
  static const std::string dir = [] {
    const std::string root = std::filesystem::temp_directory_path() / ("coreml_fuzz_" + std::to_string(getpid()));
    std::filesystem::create_directories(root + "/p.mlpackage/Data/com.apple.CoreML/weights");
    std::ofstream(root + "/p.mlpackage/Manifest.json")
        << modelsmith::CoreMlManifestJson(std::string(64, 'a'), std::string(64, 'b'));
    return root + "/p.mlpackage";
  }();
  return dir;
}

void WriteFile(const std::string& path, const char* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data, static_cast<std::streamsize>(size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t model_size;
  std::memcpy(&model_size, data, 4);
  if (model_size > size - 4) return 0;
  const char* bytes = reinterpret_cast<const char*>(data) + 4;
  WriteFile(PackageDir() + "/Data/com.apple.CoreML/model.mlmodel", bytes, model_size);
  WriteFile(PackageDir() + "/Data/com.apple.CoreML/weights/weight.bin", bytes + model_size, size - 4 - model_size);
  modelsmith::LocalObjectStore store;
  absl::StatusOr<modelsmith::CoreMlPackage> package = modelsmith::CoreMlPackage::Open(store, PackageDir());
  if (!package.ok()) return 0;
  absl::StatusOr<modelsmith::MilProgramIndex> index = modelsmith::IndexMilProgram(*package);
  if (!index.ok()) return 0;
  for (size_t p = 0; p < index->compute_ops.size(); ++p) {
    if (index->ops.at(index->compute_ops[p]).position != static_cast<int>(p)) std::abort();
  }
  for (const modelsmith::MilWeight& weight : index->weights) {
    if (weight.first_position >= static_cast<int>(index->compute_ops.size())) std::abort();
  }
  return 0;
}
