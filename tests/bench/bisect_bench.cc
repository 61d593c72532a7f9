// bisect_bench: throughput and peak memory of the bisect job beside `cp` of the same bytes.
//
// Generates (once, then reuses) a Llama-shaped F16 checkpoint of --size-gb as safetensors and as a
// torch.save zip under --work-dir, warms the page cache, then times in interleaved rounds:
//   baseline  `cp` of the file, and `cp` followed by fsync (the job fsyncs what it publishes);
//   bisect    `modelsmith run` of a bisect job into 2 and into 4 chunks (a child process whose peak
//             RSS comes from wait4), for each input format. A torch chunk is a new zip whose
//             records' CRC-32s are computed as the bytes stream through.
// Then the same for two generated Core ML packages (tests/tools/make_coreml_package.py): fp16
// weights, and the seed's shape (4-bit LUT weights declared at the top), with `cp -r` of the
// package as the baseline; the bytes are the package's weight file.
// Prints each figure beside the baselines as a ratio. Not a test: it asserts nothing.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "tests/bench/bench_support.h"

namespace fs = std::filesystem;

namespace {

using namespace modelsmith::bench;

constexpr int kRounds = 3;

std::string Spec(const std::string& input, const std::string& output, int chunks) {
  return R"({"bisect": {"input": ")" + input + R"(", "output": ")" + output + R"(", "chunks": )" +
         std::to_string(chunks) + "}}";
}

bool Bench(const char* label, const std::string& input, const std::string& work_dir, const std::string& cli) {
  const bool package = fs::is_directory(input);
  const uint64_t bytes =
      package ? fs::file_size(input + "/Data/com.apple.CoreML/weights/weight.bin") : fs::file_size(input);
  const std::string copy = work_dir + "/cp-copy";
  const std::string out = work_dir + "/out";
  std::printf("\n%s: %.3f GB\n", label, bytes / 1e9);
  const std::vector<Contender> contenders = {
      {"baseline cp", {"cp", "-r", input, copy}, ""},
      {"baseline cp + fsync", {"sh", "-c", "cp -r \"$0\" \"$1\" && sync -f \"$1\"", input, copy}, ""},
      {"bisect into 2 chunks", {cli, "run", "--spec", "-"}, Spec(input, out, 2)},
      {"bisect into 4 chunks", {cli, "run", "--spec", "-"}, Spec(input, out, 4)},
  };
  return RunInterleaved(contenders, kRounds, bytes, 2, [&] {
    fs::remove_all(copy);
    fs::remove_all(out);
  });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bisect_bench: bisect job throughput and memory beside cp"};
  std::string work_dir = "bench-data/bisect";
  double size_gb = 1.5;
  std::string cli = MODELSMITH_CLI_PATH;
  app.add_option("--work-dir", work_dir, "where the generated checkpoints and outputs go")->capture_default_str();
  app.add_option("--size-gb", size_gb, "checkpoint size in GB (10^9)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::string safetensors = PrepareInput("bisect_bench", &work_dir, "model.safetensors", size_gb);
  const std::string torch = PrepareInput("bisect_bench", &work_dir, "pytorch_model.bin", size_gb, GenerateTorch);
  WarmPageCache(safetensors);
  if (!Bench("safetensors", safetensors, work_dir, cli)) return 1;
  WarmPageCache(torch);
  if (!Bench("torch .bin", torch, work_dir, cli)) return 1;
  // Core ML: about 0.27 GB of fp16 weights, and 0.14 GB of 4-bit ones declared at the top.
  const std::string tool = std::string(MODELSMITH_SOURCE_DIR) + "/tests/tools/make_coreml_package.py";
  const std::pair<const char*, std::vector<std::string>> packages[] = {
      {"coreml-fp16.mlpackage", {"--kind", "fp16", "--dim", "2048", "--layers", "4", "--seq", "8"}},
      {"coreml-seed.mlpackage", {"--kind", "lut4", "--top", "--dim", "2048", "--layers", "8", "--seq", "8"}}};
  for (const auto& [name, flags] : packages) {
    const std::string path = work_dir + "/" + name;
    if (!fs::exists(path + "/Manifest.json")) {
      std::vector<std::string> argv = {"/usr/bin/python3", tool, path};
      argv.insert(argv.end(), flags.begin(), flags.end());
      std::printf("generating %s ...\n", path.c_str());
      if (Spawn(argv).exit_code != 0) return 1;
    }
    WarmPageCache(path + "/Data/com.apple.CoreML/weights/weight.bin");
    if (!Bench(name, path, work_dir, cli)) return 1;
  }
  return 0;
}
