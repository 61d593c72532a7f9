// shard_bench: throughput and peak memory of the shard job beside `cp` of the same bytes.
//
// Generates (once, then reuses) a Llama-shaped F16 checkpoint of --size-gb under --work-dir,
// warms the page cache with it, then times in the same run:
//   baseline  `cp` of the file, and `cp` followed by fsync (our job fsyncs what it publishes);
//   shard     `modelsmith run` of a shard job (hf_greedy and balanced), a child process whose
//             peak RSS comes from wait4.
// Prints each figure beside the baseline as a ratio. Not a test: it asserts nothing.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "tests/bench/bench_support.h"

namespace fs = std::filesystem;

namespace {

using namespace modelsmith::bench;

constexpr int kRounds = 5;

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shard_bench: shard job throughput and memory beside cp"};
  std::string work_dir = "bench-data";
  double size_gb = 1.2;
  std::string cli = MODELSMITH_CLI_PATH;
  std::string limit = "200MB";
  app.add_option("--work-dir", work_dir, "where the generated checkpoint and outputs go")->capture_default_str();
  app.add_option("--size-gb", size_gb, "checkpoint size in GB (10^9)")->capture_default_str();
  app.add_option("--max-shard-size", limit, "shard limit")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::string input = PrepareInput("shard_bench", &work_dir, "model.safetensors", size_gb);
  const uint64_t bytes = fs::file_size(input);

  // The disk's speed drifts (writeback of earlier runs, burst credits), so every round runs
  // each contender once, after a sync, and ratios are taken within a round.
  const std::string copy = work_dir + "/cp-copy.safetensors";
  const std::string out = work_dir + "/out";
  auto spec = [&](const char* strategy) {
    return std::string(R"({"shard": {"input": ")") + input + R"(", "output": ")" + out + R"(", "max_shard_size": ")" +
           limit + R"(", "strategy": ")" + strategy + R"("}})";
  };
  const std::vector<Contender> contenders = {
      {"baseline cp", {"cp", input, copy}, ""},
      {"baseline cp + fsync", {"sh", "-c", "cp \"$0\" \"$1\" && sync -f \"$1\"", input, copy}, ""},
      {"shard " + limit + " hf_greedy", {cli, "run", "--spec", "-"}, spec("SHARD_STRATEGY_HF_GREEDY")},
      {"shard " + limit + " balanced", {cli, "run", "--spec", "-"}, spec("SHARD_STRATEGY_BALANCED")},
  };
  const bool ok = RunInterleaved(contenders, kRounds, bytes, 2, [&] {
    fs::remove(copy);
    fs::remove_all(out);
  });
  if (!ok) return 1;
  return 0;
}
