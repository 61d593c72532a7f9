// What the benchmark programs share: spawning a contender and reading its time and peak RSS,
// generating a Llama-shaped F16 checkpoint, warming the page cache, medians, interleaved rounds.
#ifndef MODELSMITH_TESTS_BENCH_BENCH_SUPPORT_H_
#define MODELSMITH_TESTS_BENCH_BENCH_SUPPORT_H_

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/torch_file.h"
#include "workers/formats/safetensors.h"

namespace modelsmith::bench {

namespace fs = std::filesystem;

struct RunFigures {
  double seconds = 0;
  long peak_rss_kb = 0;
  int exit_code = -1;
};

inline RunFigures Spawn(const std::vector<std::string>& args, const std::string& stdin_text = "") {
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

// A Llama-7B-like layer stack scaled down to about `target_bytes` (F16 matrices, F32 norms), in
// state-dict order.
inline std::vector<modelsmith::SafetensorsEntry> LlamaEntries(uint64_t target_bytes) {
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
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"})
      add(p + "self_attn." + proj + ".weight", {hidden, hidden}, DType::kF16);
    add(p + "mlp.gate_proj.weight", {intermediate, hidden}, DType::kF16);
    add(p + "mlp.up_proj.weight", {intermediate, hidden}, DType::kF16);
    add(p + "mlp.down_proj.weight", {hidden, intermediate}, DType::kF16);
    add(p + "input_layernorm.weight", {hidden}, DType::kF32);
    add(p + "post_attention_layernorm.weight", {hidden}, DType::kF32);
    total += 4 * hidden * hidden * 2 + 3 * hidden * intermediate * 2 + 2 * hidden * 4;
  }
  add("model.norm.weight", {hidden}, DType::kF32);
  add("lm_head.weight", {vocab, hidden}, DType::kF16);
  return entries;
}

// Weight-like bytes: F16 values of magnitude 2^-5 .. 2^-3 with random signs (no NaN/Inf, spread
// like trained weights, so quantizers and casts take their usual paths), from a running state.
inline void FillWeights(uint64_t& state, char* data, size_t size) {
  for (size_t at = 0; at < size; at += 8) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    const uint64_t w = (state & 0x87FF87FF87FF87FFull) | 0x2800280028002800ull;
    std::memcpy(data + at, &w, std::min<size_t>(8, size - at));
  }
}

inline void Generate(const std::string& path, uint64_t target_bytes) {
  const std::vector<modelsmith::SafetensorsEntry> entries = LlamaEntries(target_bytes);
  std::ofstream out(path + ".tmp", std::ios::binary);
  out << modelsmith::SerializeSafetensorsHeader(entries, {{"format", "pt"}});
  std::vector<char> block(1 << 20);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (const auto& e : entries) {
    for (uint64_t left = e.size_bytes; left > 0;) {
      const uint64_t n = std::min<uint64_t>(left, block.size());
      FillWeights(state, block.data(), n);
      out.write(block.data(), static_cast<std::streamsize>(n));
      left -= n;
    }
  }
  out.close();
  fs::rename(path + ".tmp", path);
}

inline void WarmPageCache(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buffer(16 << 20);
  while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0) {
  }
}

// The same checkpoint as Generate, written as torch.save writes a state dict (tests/support/torch_file.h).
inline void GenerateTorch(const std::string& path, uint64_t target_bytes) {
  const std::vector<SafetensorsEntry> entries = LlamaEntries(target_bytes);
  std::vector<TorchTensorSpec> tensors;
  for (const auto& e : entries) tensors.push_back({e.name, e.dtype, e.shape});
  uint64_t state = 0x9E3779B97F4A7C15ull;
  WriteTorchCheckpoint(path + ".tmp", "pytorch_model", tensors,
                       [&](size_t, uint64_t, char* data, size_t size) { FillWeights(state, data, size); });
  fs::rename(path + ".tmp", path);
}

inline double Gbps(uint64_t bytes, double seconds) { return bytes / seconds / 1e9; }

// Makes `work_dir` absolute (creating it), generates `name` there at `size_gb` unless a file at
// least that large exists, warms the page cache with it, and prints what it got under `bench`.
// Returns the input's path; `*work_dir` becomes absolute.
inline std::string PrepareInput(const char* bench, std::string* work_dir, const std::string& name, double size_gb,
                                void (*generate)(const std::string&, uint64_t) = Generate) {
  fs::create_directories(*work_dir);
  *work_dir = fs::absolute(*work_dir).string();
  const std::string input = *work_dir + "/" + name;
  const uint64_t target = static_cast<uint64_t>(size_gb * 1e9);
  if (!fs::exists(input) || fs::file_size(input) < target) {
    std::printf("generating %.2f GB checkpoint at %s ...\n", size_gb, input.c_str());
    generate(input, target);
  }
  WarmPageCache(input);
  std::printf("%s: input %s, %.3f GB (F16 weights), page cache warm, %u cores\n", bench, input.c_str(),
              fs::file_size(input) / 1e9, std::thread::hardware_concurrency());
  return input;
}

inline double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct Contender {
  std::string label;
  std::vector<std::string> argv;
  std::string stdin_text;
};

// Runs every contender once per round, `rounds` times, after `reset` (which removes outputs) and a
// sync each time: the disk's speed drifts (writeback of earlier runs, burst credits), so ratios are
// taken within a round. Then prints per contender the median time, GB/s over `bytes`, the peak RSS
// and, from contender `first_job` on, the medians of the per-round ratios against contenders 0 and
// 1 (the baselines). Returns false (after saying which) when a run fails.
inline bool RunInterleaved(const std::vector<Contender>& contenders, int rounds, uint64_t bytes, size_t first_job,
                           const std::function<void()>& reset) {
  std::vector<std::vector<RunFigures>> runs(contenders.size());
  for (int round = 0; round < rounds; ++round) {
    for (size_t c = 0; c < contenders.size(); ++c) {
      reset();
      sync();
      runs[c].push_back(Spawn(contenders[c].argv, contenders[c].stdin_text));
      if (runs[c].back().exit_code != 0) {
        std::printf("%s failed (exit %d)\n", contenders[c].label.c_str(), runs[c].back().exit_code);
        return false;
      }
    }
  }
  reset();
  std::printf(
      "(medians of %d interleaved rounds, each run after a sync; ratio = baseline time / job time in the same round)\n",
      rounds);
  for (size_t c = 0; c < contenders.size(); ++c) {
    std::vector<double> seconds, vs_first, vs_second;
    long peak_kb = 0;
    for (int r = 0; r < rounds; ++r) {
      seconds.push_back(runs[c][r].seconds);
      vs_first.push_back(runs[0][r].seconds / runs[c][r].seconds);
      vs_second.push_back(runs[1][r].seconds / runs[c][r].seconds);
      peak_kb = std::max(peak_kb, runs[c][r].peak_rss_kb);
    }
    const double median = Median(seconds);
    std::printf("%-30s %6.2f s  %6.3f GB/s  peak RSS %6.1f MB", contenders[c].label.c_str(), median,
                Gbps(bytes, median), peak_kb / 1e3);
    if (c >= first_job)
      std::printf("  ratio vs %s %.2f  vs %s %.2f", contenders[0].label.c_str(), Median(vs_first),
                  contenders[1].label.c_str(), Median(vs_second));
    std::printf("\n");
  }
  return true;
}

}  // namespace modelsmith::bench

#endif  // MODELSMITH_TESTS_BENCH_BENCH_SUPPORT_H_
