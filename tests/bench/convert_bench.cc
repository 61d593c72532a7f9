// convert_bench: the convert job on a generated torch checkpoint (pytorch_model.bin, Llama-like
// shapes, F16 weights, written the way torch.save lays out its zip) beside a `cp` of the same
// file, measured in the same run.
//
// Rows: `cp`, and `cp` followed by fsync (the job fsyncs what it publishes); convert to GGUF F16
// (llama.cpp names, Q/K rows reordered, a generated config.json and BPE tokenizer.json beside
// the checkpoint); convert to safetensors keeping F16 (the copy path: each piece read once,
// hashed, written from that buffer, re-read and compared bit for bit); convert to BF16 (the cast
// path: read, cast on both cores, write, re-read and compare). Each job is a `modelsmith run`
// child whose peak RSS comes
// from wait4. Ratios are job throughput / baseline throughput in the same round, medians over
// rounds.
// Not a test: it asserts nothing.
#include "CLI/CLI.hpp"
#include "tests/bench/bench_support.h"

namespace {

using namespace modelsmith::bench;

// config.json and a 32000-token BPE tokenizer.json for the generated shapes (LlamaEntries).
void WriteHfFiles(const std::string& dir, const std::vector<modelsmith::SafetensorsEntry>& entries) {
  uint64_t layers = 0;
  for (const auto& e : entries) layers += e.name.find(".mlp.up_proj.") != std::string::npos;
  std::ofstream(dir + "/config.json")
      << "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 2048, "
         "\"intermediate_size\": 5504, \"num_hidden_layers\": "
      << layers
      << ", \"num_attention_heads\": 16, \"num_key_value_heads\": 16, \"vocab_size\": 32000, "
         "\"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0}";
  std::ofstream tokenizer(dir + "/tokenizer.json");
  tokenizer << "{\"model\": {\"type\": \"BPE\", \"merges\": [], \"vocab\": {";
  for (int i = 0; i < 32000; ++i) tokenizer << (i ? ", " : "") << "\"t" << i << "\": " << i;
  tokenizer << "}}}";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"convert_bench: convert job throughput and memory beside cp"};
  std::string work_dir = "bench-data/convert";
  double size_gb = 1.6;
  int rounds = 3;
  std::string cli = MODELSMITH_CLI_PATH;
  app.add_option("--work-dir", work_dir, "where the generated checkpoint and outputs go")->capture_default_str();
  app.add_option("--size-gb", size_gb, "checkpoint size in GB (10^9), at least 1.5 for the issue's figures")
      ->capture_default_str();
  app.add_option("--rounds", rounds, "interleaved rounds (medians are reported)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::string input = PrepareInput("convert_bench", &work_dir, "pytorch_model.bin", size_gb, GenerateTorch);
  const uint64_t bytes = fs::file_size(input);
  const std::string copy = work_dir + "/cp-copy.bin";
  WriteHfFiles(work_dir, LlamaEntries(static_cast<uint64_t>(size_gb * 1e9)));
  const std::vector<std::pair<std::string, std::string>> jobs = {
      {"GGUF F16", "f16"}, {"safetensors F16", ""}, {"safetensors BF16", "bf16"}};
  auto output_of = [&](size_t i) { return work_dir + "/out-" + std::to_string(i) + (i == 0 ? ".gguf" : ""); };
  auto clean = [&] {
    fs::remove(copy);
    for (size_t i = 0; i < jobs.size(); ++i) {
      fs::remove_all(output_of(i));
      fs::remove(output_of(i) + ".manifest.json");
    }
  };
  std::vector<double> cp_s, cp_sync_s, sha_s;
  std::vector<std::vector<RunFigures>> runs(jobs.size());
  for (int round = 0; round < rounds; ++round) {
    clean();
    sync();
    cp_s.push_back(Spawn({"cp", input, copy}).seconds);
    fs::remove(copy);
    sync();
    cp_sync_s.push_back(Spawn({"sh", "-c", "cp \"$0\" \"$1\" && sync -f \"$1\"", input, copy}).seconds);
    // The SHA-256 every job takes of what it writes, alone on one core with the same library
    // (OpenSSL, SHA-NI where the CPU has it): a floor under every job's time.
    sha_s.push_back(Spawn({"sh", "-c", "openssl dgst -sha256 \"$0\" > /dev/null", input}).seconds);
    for (size_t i = 0; i < jobs.size(); ++i) {
      clean();
      sync();
      const std::string spec = R"({"convert": {"input": ")" + input + R"(", "output": ")" + output_of(i) +
                               R"(", "target_format": ")" +
                               (i == 0 ? "TARGET_FORMAT_GGUF" : "TARGET_FORMAT_SAFETENSORS") + R"(", "dtype": ")" +
                               jobs[i].second + R"("}})";
      runs[i].push_back(Spawn({cli, "run", "--spec", "-"}, spec));
      if (runs[i].back().exit_code != 0) {
        std::printf("%s failed (exit %d)\n", jobs[i].first.c_str(), runs[i].back().exit_code);
        return 1;
      }
    }
  }
  clean();
  std::printf("(medians of %d interleaved rounds; ratio = baseline time / job time in the same round)\n", rounds);
  std::printf("%-26s %7.2f s  %7.0f MB/s\n", "baseline cp", Median(cp_s), bytes / Median(cp_s) / 1e6);
  std::printf("%-26s %7.2f s  %7.0f MB/s\n", "baseline cp + fsync", Median(cp_sync_s), bytes / Median(cp_sync_s) / 1e6);
  std::printf("%-26s %7.2f s  %7.0f MB/s  (a bound on every job: each hashes what it writes)\n",
              "baseline openssl sha256", Median(sha_s), bytes / Median(sha_s) / 1e6);
  for (size_t i = 0; i < jobs.size(); ++i) {
    std::vector<double> seconds, vs_cp, vs_cp_sync;
    long peak_kb = 0;
    for (int r = 0; r < rounds; ++r) {
      seconds.push_back(runs[i][r].seconds);
      vs_cp.push_back(cp_s[r] / runs[i][r].seconds);
      vs_cp_sync.push_back(cp_sync_s[r] / runs[i][r].seconds);
      peak_kb = std::max(peak_kb, runs[i][r].peak_rss_kb);
    }
    const double median = Median(seconds);
    std::printf("convert to %-15s %7.2f s  %7.0f MB/s  peak RSS %6.1f MB  ratio vs cp %.2f  vs cp+fsync %.2f\n",
                jobs[i].first.c_str(), median, bytes / median / 1e6, peak_kb / 1e3, Median(vs_cp), Median(vs_cp_sync));
  }
  return 0;
}
