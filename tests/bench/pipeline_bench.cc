// pipeline_bench: a diffusers pipeline job beside the job on its biggest component alone and `cp -r`.
//
// Generates (once, then reuses) an SD-shaped pipeline with tests/tools/make_diffusers_pipeline.py
// whose unet carries an extra tensor of --size-mb MiB (F32), warms the page cache, then times in
// interleaved rounds:
//   baseline  `cp -r` of the pipeline directory, and `modelsmith run` converting the unet folder
//             alone to an fp16 variant (what a user ran per component before pipelines);
//   pipeline  `modelsmith run` converting the whole pipeline to an fp16 variant (three components,
//             the other files copied, one manifest), and resharding it at hf_default.
// The pipeline/unet-alone ratio is the cost of the pipeline layer (staging, moves, copies of the
// small files, verification). Prints each figure beside the baselines as a ratio; asserts nothing.
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

std::string ConvertSpec(const std::string& input, const std::string& output, const std::string& stem) {
  return R"({"convert": {"input": ")" + input + R"(", "output": ")" + output +
         R"(", "target_format": "TARGET_FORMAT_SAFETENSORS", "dtype": "f16", "variant": "fp16")" +
         (stem.empty() ? "" : R"(, "stem": ")" + stem + "\"") + "}}";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pipeline_bench: a pipeline job beside its biggest component alone and cp -r"};
  std::string work_dir = "bench-data/pipeline";
  int size_mb = 1024;
  std::string cli = MODELSMITH_CLI_PATH;
  app.add_option("--work-dir", work_dir, "where the generated pipeline and outputs go")->capture_default_str();
  app.add_option("--size-mb", size_mb, "MiB of extra unet weights")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  fs::create_directories(work_dir);
  work_dir = fs::absolute(work_dir).string();
  const std::string pipeline = work_dir + "/sd-" + std::to_string(size_mb);
  if (!fs::exists(pipeline + "/model_index.json")) {
    std::printf("generating %s ...\n", pipeline.c_str());
    if (Spawn({"/usr/bin/python3", std::string(MODELSMITH_SOURCE_DIR) + "/tests/tools/make_diffusers_pipeline.py",
               pipeline, "--kind", "sd", "--big-mb", std::to_string(size_mb)})
            .exit_code != 0)
      return 1;
  }
  uint64_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(pipeline)) {
    if (e.is_regular_file()) {
      bytes += e.file_size();
      WarmPageCache(e.path().string());
    }
  }
  std::printf("pipeline_bench: %s, %.3f GB\n", pipeline.c_str(), bytes / 1e9);
  const std::string copy = work_dir + "/cp-copy", out = work_dir + "/out";
  const std::vector<Contender> contenders = {
      {"baseline cp -r", {"cp", "-r", pipeline, copy}, ""},
      {"baseline unet alone",
       {cli, "run", "--spec", "-"},
       ConvertSpec(pipeline + "/unet", out, "diffusion_pytorch_model")},
      {"pipeline fp16 variant", {cli, "run", "--spec", "-"}, ConvertSpec(pipeline, out, "")},
      {"pipeline reshard hf_default",
       {cli, "run", "--spec", "-"},
       R"({"shard": {"input": ")" + pipeline + R"(", "output": ")" + out + R"(", "max_shard_size": "hf_default"}})"},
  };
  return RunInterleaved(contenders, kRounds, bytes, 2,
                        [&] {
                          fs::remove_all(copy);
                          fs::remove_all(out);
                        })
             ? 0
             : 1;
}
