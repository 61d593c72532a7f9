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
#include "workers/formats/safetensors.h"

namespace fs = std::filesystem;

namespace {

struct RunFigures {
  double seconds = 0;
  long peak_rss_kb = 0;
  int exit_code = -1;
};

RunFigures Spawn(const std::vector<std::string>& args, const std::string& stdin_text = "") {
  int in_pipe[2];
  if (pipe(in_pipe) != 0) return {};
  const auto start = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    close(in_pipe[1]);
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(in_pipe[0]);
  if (!stdin_text.empty()) (void)!write(in_pipe[1], stdin_text.data(), stdin_text.size());
  close(in_pipe[1]);
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  RunFigures figures;
  figures.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  figures.peak_rss_kb = usage.ru_maxrss;
  figures.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return figures;
}

// A Llama-7B-like layer stack scaled down to about `target_bytes` of F16.
void Generate(const std::string& path, uint64_t target_bytes) {
  using modelsmith::DType;
  const uint64_t hidden = 2048, intermediate = 5504, vocab = 32000;
  std::vector<modelsmith::SafetensorsEntry> entries;
  auto add = [&](const std::string& name, std::vector<uint64_t> shape, DType dtype) {
    uint64_t bytes = (dtype == DType::kF32 ? 4 : 2);
    for (uint64_t d : shape) bytes *= d;
    entries.push_back({name, dtype, shape, bytes});
  };
  add("model.embed_tokens.weight", {vocab, hidden}, DType::kF16);
  uint64_t total = entries[0].size_bytes * 2;
  for (int i = 0; total < target_bytes; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) add(p + "self_attn." + proj + ".weight", {hidden, hidden}, DType::kF16);
    add(p + "mlp.gate_proj.weight", {intermediate, hidden}, DType::kF16);
    add(p + "mlp.up_proj.weight", {intermediate, hidden}, DType::kF16);
    add(p + "mlp.down_proj.weight", {hidden, intermediate}, DType::kF16);
    add(p + "input_layernorm.weight", {hidden}, DType::kF32);
    add(p + "post_attention_layernorm.weight", {hidden}, DType::kF32);
    total += 4 * hidden * hidden * 2 + 3 * hidden * intermediate * 2 + 2 * hidden * 4;
  }
  add("model.norm.weight", {hidden}, DType::kF32);
  add("lm_head.weight", {vocab, hidden}, DType::kF16);
  std::ofstream out(path + ".tmp", std::ios::binary);
  out << modelsmith::SerializeSafetensorsHeader(entries, {{"format", "pt"}});
  std::vector<uint64_t> block(1 << 17);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (const auto& e : entries) {
    for (uint64_t left = e.size_bytes; left > 0;) {
      for (uint64_t& w : block) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        w = state & 0xBFFFBFFFBFFFBFFFull;  // no F16 NaN/Inf
      }
      const uint64_t n = std::min<uint64_t>(left, block.size() * 8);
      out.write(reinterpret_cast<const char*>(block.data()), static_cast<std::streamsize>(n));
      left -= n;
    }
  }
  out.close();
  fs::rename(path + ".tmp", path);
}

void WarmPageCache(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buffer(16 << 20);
  while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
  }
}

double Gbps(uint64_t bytes, double seconds) { return bytes / seconds / 1e9; }

constexpr int kRounds = 5;

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

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

  fs::create_directories(work_dir);
  work_dir = fs::absolute(work_dir).string();
  const std::string input = work_dir + "/model.safetensors";
  const uint64_t target = static_cast<uint64_t>(size_gb * 1e9);
  if (!fs::exists(input) || fs::file_size(input) < target) {
    std::printf("generating %.2f GB checkpoint at %s ...\n", size_gb, input.c_str());
    Generate(input, target);
  }
  const uint64_t bytes = fs::file_size(input);
  WarmPageCache(input);
  std::printf("shard_bench: input %s, %.3f GB, page cache warm, %u cores\n", input.c_str(), bytes / 1e9,
              std::thread::hardware_concurrency());

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
