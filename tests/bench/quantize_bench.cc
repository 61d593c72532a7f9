// quantize_bench: input throughput, wall time and peak memory of the quantize job beside a memcpy
// and a `cp` of the same bytes, measured in the same run.
//
// Generates (once, then reuses) a Llama-shaped F16 checkpoint of --size-gb (default 1.6 GB)
// under --work-dir, warms the page cache with it, then runs interleaved rounds of:
//   baseline  memcpy of the input's bytes (in this process, from a mapping of the file), and
//             `cp` of the file;
//   quantize  `modelsmith run` of a quantize job for Q8_0, Q4_0, Q4_K, bnb_int8 and bnb_nf4, a
//             child process whose peak RSS comes from wait4;
//   imatrix   the same for Q8_0, Q4_K_M, Q6_K, IQ4_XS, IQ3_M and IQ2_XXS with an importance matrix
//             (a legacy .dat written here: one positive value per input column of every 2-D
//             weight, as llama-imatrix writes).
// Each figure is printed beside the baselines as a ratio (baseline time / job time in the same
// round, medians over rounds). Not a test: it asserts nothing.
#include <sys/mman.h>

#include <cstring>
#include <thread>

#include "CLI/CLI.hpp"
#include "nlohmann/json.hpp"
#include "tests/bench/bench_support.h"

namespace {

using namespace modelsmith::bench;

// memcpy of the whole file from a read-only mapping into a reused buffer of 64 MiB pieces.
double TimeMemcpy(const std::string& path, uint64_t bytes) {
  const int fd = open(path.c_str(), O_RDONLY);
  void* map = mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return -1;
  std::vector<char> buffer(64 << 20);
  const char* src = static_cast<const char*>(map);
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t done = 0; done < bytes;) {
    const uint64_t n = std::min<uint64_t>(buffer.size(), bytes - done);
    std::memcpy(buffer.data(), src + done, n);
    done += n;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  munmap(map, bytes);
  return seconds;
}

// A legacy importance matrix for every 2-D tensor of the safetensors file at `input`.
void WriteImatrix(const std::string& input, const std::string& path) {
  std::ifstream in(input, std::ios::binary);
  uint64_t header_bytes = 0;
  in.read(reinterpret_cast<char*>(&header_bytes), 8);
  std::string header(header_bytes, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_bytes));
  const nlohmann::json tensors = nlohmann::json::parse(header);
  std::ofstream out(path, std::ios::binary);
  auto i32 = [&](int32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  std::vector<std::pair<std::string, int64_t>> entries;
  for (const auto& [name, t] : tensors.items()) {
    if (name != "__metadata__" && t["shape"].size() == 2) entries.emplace_back(name, t["shape"][1].get<int64_t>());
  }
  i32(static_cast<int32_t>(entries.size()));
  for (const auto& [name, columns] : entries) {
    i32(static_cast<int32_t>(name.size()));
    out << name;
    i32(1);
    i32(static_cast<int32_t>(columns));
    for (int64_t c = 0; c < columns; ++c) {
      const float v = 0.5f + static_cast<float>((c * 2654435761u) % 1000) / 250.0f;
      out.write(reinterpret_cast<const char*>(&v), 4);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"quantize_bench: quantize job throughput and memory beside memcpy and cp"};
  std::string work_dir = "bench-data";
  double size_gb = 1.6;
  int rounds = 3;
  std::string cli = MODELSMITH_CLI_PATH;
  std::vector<std::string> schemes = {"Q8_0", "Q4_0", "Q4_K", "bnb_int8", "bnb_nf4"};
  app.add_option("--work-dir", work_dir, "where the generated checkpoint and outputs go")->capture_default_str();
  app.add_option("--size-gb", size_gb, "checkpoint size in GB (10^9), at least 1.5 for the issue's figures")
      ->capture_default_str();
  app.add_option("--rounds", rounds, "interleaved rounds (medians are reported)")->capture_default_str();
  app.add_option("--scheme", schemes, "schemes to run")->capture_default_str();
  std::vector<std::string> imatrix_schemes = {"Q8_0", "Q4_K_M", "Q6_K", "IQ4_XS", "IQ3_M", "IQ2_XXS"};
  app.add_option("--imatrix-scheme", imatrix_schemes, "schemes to run with an importance matrix")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::string input = PrepareInput("quantize_bench", &work_dir, "quantize-input.safetensors", size_gb);
  const uint64_t bytes = fs::file_size(input);

  const std::string copy = work_dir + "/cp-copy.safetensors";
  const std::string imatrix = work_dir + "/imatrix.dat";
  WriteImatrix(input, imatrix);
  const size_t plain = schemes.size();
  for (const std::string& s : imatrix_schemes) schemes.push_back(s);
  auto output_of = [&](const std::string& scheme) {
    const bool gguf = scheme[0] == 'Q' || scheme[0] == 'I';
    return work_dir + "/quantized-" + scheme + (gguf ? ".gguf" : "");
  };
  auto clean = [&] {
    fs::remove(copy);
    for (const std::string& s : schemes) {
      fs::remove_all(output_of(s));
      fs::remove(output_of(s) + ".manifest.json");
    }
  };
  std::vector<double> memcpy_s, cp_s;
  std::vector<std::vector<RunFigures>> runs(schemes.size());
  for (int round = 0; round < rounds; ++round) {
    clean();
    sync();
    memcpy_s.push_back(TimeMemcpy(input, bytes));
    RunFigures cp = Spawn({"cp", input, copy});
    cp_s.push_back(cp.seconds);
    for (size_t i = 0; i < schemes.size(); ++i) {
      clean();
      sync();
      const std::string with_imatrix = i >= plain ? R"(, "imatrix": ")" + imatrix + R"(")" : "";
      const std::string spec = R"({"quantize": {"input": ")" + input + R"(", "output": ")" + output_of(schemes[i]) +
                               R"(", "scheme": ")" + schemes[i] + R"(")" + with_imatrix + "}}";
      runs[i].push_back(Spawn({cli, "run", "--spec", "-"}, spec));
      if (runs[i].back().exit_code != 0) {
        std::printf("%s failed (exit %d)\n", schemes[i].c_str(), runs[i].back().exit_code);
        return 1;
      }
    }
  }
  clean();
  std::printf("(medians of %d interleaved rounds; ratio = baseline time / job time in the same round)\n", rounds);
  std::printf("%-22s %7.2f s  %7.0f MB/s\n", "baseline memcpy", Median(memcpy_s), bytes / Median(memcpy_s) / 1e6);
  std::printf("%-22s %7.2f s  %7.0f MB/s\n", "baseline cp", Median(cp_s), bytes / Median(cp_s) / 1e6);
  for (size_t i = 0; i < schemes.size(); ++i) {
    std::vector<double> seconds, vs_memcpy, vs_cp;
    long peak_kb = 0;
    for (int r = 0; r < rounds; ++r) {
      seconds.push_back(runs[i][r].seconds);
      vs_memcpy.push_back(memcpy_s[r] / runs[i][r].seconds);
      vs_cp.push_back(cp_s[r] / runs[i][r].seconds);
      peak_kb = std::max(peak_kb, runs[i][r].peak_rss_kb);
    }
    const double median = Median(seconds);
    const std::string label = schemes[i] + (i >= plain ? " +imatrix" : "");
    std::printf("quantize %-20s %7.2f s  %7.0f MB/s  peak RSS %6.1f MB  ratio vs memcpy %.3f  vs cp %.2f\n",
                label.c_str(), median, bytes / median / 1e6, peak_kb / 1e3, Median(vs_memcpy), Median(vs_cp));
  }
  return 0;
}
