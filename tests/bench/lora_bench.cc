// lora_bench: the LoRA merge job on a generated Llama-like F16 safetensors base (LlamaEntries,
// about 1.6 GB) and a rank-16 PEFT adapter on every linear layer of every block (q, k, v, o,
// gate, up, down), beside `cp` of the base, measured in the same run.
//
// Rows: `cp` and `cp` + fsync of the base; the merge into the F16 safetensors base (every
// projection decoded, updated with B @ A, rounded back to F16; embeddings, norms and head copied);
// the merge into the same model quantized to Q8_0 GGUF and to bitsandbytes int8 (each made once,
// before the rounds, by the quantize job): decoded, updated and requantized in the same scheme. Each job is a
// `modelsmith run` child whose peak RSS comes from wait4; throughput is base bytes / job time; medians over interleaved
// rounds. Not a test: it asserts nothing.
#include <random>

#include "CLI/CLI.hpp"
#include "tests/bench/bench_support.h"

namespace {

using namespace modelsmith::bench;

// adapter_model.safetensors (F32 A and B, rank 16, normal values) and adapter_config.json.
void WriteAdapter(const std::string& dir, const std::vector<modelsmith::SafetensorsEntry>& base, uint64_t rank) {
  fs::create_directories(dir);
  std::vector<modelsmith::SafetensorsEntry> entries;
  for (const auto& e : base) {
    if (e.shape.size() != 2 || e.name.find("model.layers.") != 0) continue;
    const std::string module = "base_model.model." + e.name.substr(0, e.name.size() - std::string(".weight").size());
    entries.push_back({module + ".lora_A.weight", modelsmith::DType::kF32, {rank, e.shape[1]}, rank * e.shape[1] * 4});
    entries.push_back({module + ".lora_B.weight", modelsmith::DType::kF32, {e.shape[0], rank}, e.shape[0] * rank * 4});
  }
  std::ofstream out(dir + "/adapter_model.safetensors", std::ios::binary);
  out << modelsmith::SerializeSafetensorsHeader(entries, {{"format", "pt"}});
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  for (const auto& e : entries) {
    std::vector<float> values(e.size_bytes / 4);
    for (float& v : values) v = normal(rng);
    out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(e.size_bytes));
  }
  std::ofstream(dir + "/adapter_config.json")
      << R"({"peft_type": "LORA", "r": )" << rank
      << R"(, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", )"
         R"("gate_proj", "up_proj", "down_proj"]})";
}

std::string MergeSpec(const std::string& base, const std::string& adapter, const std::string& output) {
  return R"({"lora_merge": {"base": ")" + base + R"(", "adapters": [{"uri": ")" + adapter + R"("}], "output": ")" +
         output + R"("}})";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lora_bench: LoRA merge throughput and memory beside cp"};
  std::string work_dir = "bench-data/lora";
  double size_gb = 1.6;
  int rounds = 3;
  uint64_t rank = 16;
  std::string cli = MODELSMITH_CLI_PATH;
  app.add_option("--work-dir", work_dir, "where the generated base, adapter and outputs go")->capture_default_str();
  app.add_option("--size-gb", size_gb, "base size in GB (10^9), at least 1.5 for the issue's figures")
      ->capture_default_str();
  app.add_option("--rounds", rounds, "interleaved rounds (medians are reported)")->capture_default_str();
  app.add_option("--rank", rank, "adapter rank")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::string base = PrepareInput("lora_bench", &work_dir, "model.safetensors", size_gb);
  const uint64_t bytes = fs::file_size(base);
  const std::string adapter = work_dir + "/adapter";
  WriteAdapter(adapter, LlamaEntries(static_cast<uint64_t>(size_gb * 1e9)), rank);
  const std::string q8 = work_dir + "/model-Q8_0.gguf";
  if (!fs::exists(q8)) {
    std::printf("quantizing the base to Q8_0 GGUF once ...\n");
    RunFigures made = Spawn({cli, "run", "--spec", "-"}, R"({"quantize": {"input": ")" + base + R"(", "output": ")" +
                                                             q8 + R"(", "scheme": "Q8_0"}})");
    if (made.exit_code != 0) return 1;
  }
  WarmPageCache(q8);
  const uint64_t q8_bytes = fs::file_size(q8);
  const std::string int8 = work_dir + "/model-bnb-int8";
  if (!fs::exists(int8 + "/model.safetensors")) {
    std::printf("quantizing the base to bitsandbytes int8 once ...\n");
    fs::remove_all(int8);
    RunFigures made = Spawn({cli, "run", "--spec", "-"}, R"({"quantize": {"input": ")" + base + R"(", "output": ")" +
                                                             int8 + R"(", "scheme": "bnb_int8"}})");
    if (made.exit_code != 0) return 1;
  }
  WarmPageCache(int8 + "/model.safetensors");
  const uint64_t int8_bytes = fs::file_size(int8 + "/model.safetensors");
  struct Job {
    const char* label;
    std::string base, output;
    uint64_t bytes;
  };
  const std::vector<Job> jobs = {{"F16 safetensors", base, work_dir + "/merged-f16", bytes},
                                 {"Q8_0 GGUF", q8, work_dir + "/merged-q8.gguf", q8_bytes},
                                 {"bnb int8", int8, work_dir + "/merged-int8", int8_bytes}};
  const std::string copy = work_dir + "/cp-copy.safetensors";
  auto clean = [&] {
    fs::remove(copy);
    for (const Job& j : jobs) {
      fs::remove_all(j.output);
      fs::remove(j.output + ".manifest.json");
    }
  };
  std::vector<double> cp_s, cp_sync_s;
  std::vector<std::vector<RunFigures>> runs(jobs.size());
  for (int round = 0; round < rounds; ++round) {
    clean();
    sync();
    cp_s.push_back(Spawn({"cp", base, copy}).seconds);
    fs::remove(copy);
    sync();
    cp_sync_s.push_back(Spawn({"sh", "-c", "cp \"$0\" \"$1\" && sync -f \"$1\"", base, copy}).seconds);
    for (size_t i = 0; i < jobs.size(); ++i) {
      clean();
      sync();
      runs[i].push_back(Spawn({cli, "run", "--spec", "-"}, MergeSpec(jobs[i].base, adapter, jobs[i].output)));
      if (runs[i].back().exit_code != 0) {
        std::printf("merge into %s failed (exit %d)\n", jobs[i].label, runs[i].back().exit_code);
        return 1;
      }
    }
  }
  clean();
  std::printf("(rank %llu on every linear layer; medians of %d interleaved rounds; ratio = baseline time / job time)\n",
              static_cast<unsigned long long>(rank), rounds);
  std::printf("%-28s %7.2f s  %7.0f MB/s\n", "baseline cp (F16 base)", Median(cp_s), bytes / Median(cp_s) / 1e6);
  std::printf("%-28s %7.2f s  %7.0f MB/s\n", "baseline cp + fsync", Median(cp_sync_s), bytes / Median(cp_sync_s) / 1e6);
  for (size_t i = 0; i < jobs.size(); ++i) {
    std::vector<double> seconds, vs_cp;
    long peak_kb = 0;
    for (int r = 0; r < rounds; ++r) {
      seconds.push_back(runs[i][r].seconds);
      vs_cp.push_back(cp_s[r] / runs[i][r].seconds);
      peak_kb = std::max(peak_kb, runs[i][r].peak_rss_kb);
    }
    const double median = Median(seconds);
    std::printf("merge into %-17s %7.2f s  %7.0f MB/s  peak RSS %6.1f MB  (%.2f GB)  time ratio vs cp %.2f\n",
                jobs[i].label, median, jobs[i].bytes / median / 1e6, peak_kb / 1e3, jobs[i].bytes / 1e9, Median(vs_cp));
  }
  return 0;
}
