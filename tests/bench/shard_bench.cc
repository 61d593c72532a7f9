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
  const std::vector<std::pair<std::string, std::vector<std::string>>> contenders = {
      {"baseline cp", {"cp", input, copy}},
      {"baseline cp + fsync", {"sh", "-c", "cp \"$0\" \"$1\" && sync -f \"$1\"", input, copy}},
      {"shard " + limit + " hf_greedy", {cli, "run", "--spec", "-"}},
      {"shard " + limit + " balanced", {cli, "run", "--spec", "-"}},
  };
  const std::vector<std::string> stdin_of = {"", "", spec("SHARD_STRATEGY_HF_GREEDY"), spec("SHARD_STRATEGY_BALANCED")};
  std::vector<std::vector<RunFigures>> runs(contenders.size());
  for (int round = 0; round < kRounds; ++round) {
    for (size_t c = 0; c < contenders.size(); ++c) {
      fs::remove(copy);
      fs::remove_all(out);
      sync();
      runs[c].push_back(Spawn(contenders[c].second, stdin_of[c]));
      if (runs[c].back().exit_code != 0) {
        std::printf("%s failed (exit %d)\n", contenders[c].first.c_str(), runs[c].back().exit_code);
        return 1;
      }
    }
  }
  fs::remove(copy);
  fs::remove_all(out);
  std::printf("(medians of %d interleaved rounds, each run after a sync; ratio = baseline time / job time in the same round)\n",
              kRounds);
  for (size_t c = 0; c < contenders.size(); ++c) {
    std::vector<double> seconds, vs_cp, vs_cp_sync;
    long peak_kb = 0;
    for (int r = 0; r < kRounds; ++r) {
      seconds.push_back(runs[c][r].seconds);
      vs_cp.push_back(runs[0][r].seconds / runs[c][r].seconds);
      vs_cp_sync.push_back(runs[1][r].seconds / runs[c][r].seconds);
      peak_kb = std::max(peak_kb, runs[c][r].peak_rss_kb);
    }
    const double median = Median(seconds);
    std::printf("%-30s %6.2f s  %6.3f GB/s  peak RSS %6.1f MB", contenders[c].first.c_str(), median,
                Gbps(bytes, median), peak_kb / 1e3);
    if (c >= 2) std::printf("  ratio vs cp %.2f  vs cp+fsync %.2f", Median(vs_cp), Median(vs_cp_sync));
    std::printf("\n");
  }
  return 0;
}
