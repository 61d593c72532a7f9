// libFuzzer target: any bytes as a diffusers pipeline directory, through what every pipeline job
// and inspect run first: model_index.json parsed and checked, each component's folder found, its
// weight files grouped into saved copies by variant and one chosen. The input is model_index.json,
// a NUL byte, then newline-separated file paths to create (mapped onto a safe alphabet, at most 32,
// none with an empty, "." or ".." segment). Errors are fine; a crash, a hang or an allocation
// beyond -rss_limit_mb is a bug. A component's chosen weights must be one of its own files.
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "workers/formats/diffusers_pipeline.h"
#include "workers/storage/local_object_store.h"

namespace {

namespace fs = std::filesystem;

const std::string& Root() {
  static const std::string root = fs::temp_directory_path() / ("pipeline_fuzz_" + std::to_string(getpid()));
  return root;
}

// The path's bytes mapped onto letters, digits, "._-/", or empty when a segment is unsafe.
std::string SafePath(absl::string_view raw) {
  std::string path;
  for (char c : raw.substr(0, 96)) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                       c == '_' || c == '-' || c == '/';
    path.push_back(plain ? c : '_');
  }
  for (absl::string_view segment : absl::StrSplit(path, '/')) {
    if (segment.empty() || segment == "." || segment == "..") return "";
  }
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  if (nul == absl::string_view::npos) return 0;
  std::error_code ec;
  fs::remove_all(Root(), ec);
  fs::create_directories(Root());
  std::ofstream(Root() + "/model_index.json", std::ios::binary) << std::string(input.substr(0, nul));
  int made = 0;
  for (absl::string_view line : absl::StrSplit(input.substr(nul + 1), '\n')) {
    const std::string path = SafePath(line);
    if (path.empty() || path == "model_index.json" || made == 32) continue;
    fs::create_directories(fs::path(Root() + "/" + path).parent_path(), ec);
    std::ofstream(Root() + "/" + path, std::ios::binary) << "x";
    ++made;
  }
  modelsmith::LocalObjectStore store;
  absl::StatusOr<modelsmith::DiffusersPipeline> pipeline = modelsmith::ReadDiffusersPipeline(store, Root());
  if (!pipeline.ok()) return 0;
  for (const modelsmith::PipelineComponent& component : pipeline->components) {
    if (component.name.empty() || component.name.find('/') != std::string::npos || component.name[0] == '.')
      std::abort();
    for (const std::string variant : {"", "fp16"}) {
      absl::StatusOr<const modelsmith::WeightSet*> weights = modelsmith::ChooseWeights(component, variant);
      if (!weights.ok()) continue;
      const bool own =
          std::any_of(component.files.begin(), component.files.end(),
                      [&](const modelsmith::ObjectEntry& f) { return f.relative_name == (*weights)->entry; });
      if (!own) std::abort();
    }
  }
  return 0;
}
