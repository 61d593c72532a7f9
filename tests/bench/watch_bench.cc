// watch_bench: the server's read path while many clients watch. Starts the real modelsmithd
// (2 workers, paced jobs) on loopback and measures GetJob latency twice:
//   baseline  on the idle server (one ended job, nothing running, no stream open);
//   loaded    while 10 paced shard jobs run and 500 WatchJob streams follow them.
// Prints p50/p99 of each, the ratio loaded/baseline, whether every stream saw its job's final
// state, and the server's largest thread count. Not a test: it asserts nothing.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <thread>

#include "CLI/CLI.hpp"
#include "tests/bench/bench_support.h"
#include "tests/support/job_client.h"
#include "tests/support/subprocess.h"

namespace modelsmith::bench {
namespace {

double GetJobMs(v1::JobService::Stub& stub, const std::string& id, v1::Job* job) {
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_id(id);
  const auto begin = std::chrono::steady_clock::now();
  (void)stub.GetJob(&context, request, job);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - begin).count();
}

double Percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * values.size()))];
}

int Main(int argc, char** argv) {
  std::string work_dir = "bench-data/watch";
  int streams = 500;
  int jobs = 10;
  CLI::App app{"GetJob latency while WatchJob streams follow running jobs"};
  app.add_option("--work-dir", work_dir, "where the server's data directory and the checkpoint go")
      ->capture_default_str();
  app.add_option("--streams", streams, "WatchJob streams opened at once")->capture_default_str();
  app.add_option("--jobs", jobs, "paced shard jobs the streams follow")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  fs::create_directories(work_dir);
  work_dir = fs::absolute(work_dir).string();
  const std::string data = work_dir + "/data";
  fs::remove_all(data);
  fs::create_directories(data);
  const std::string input = data + "/model.safetensors";
  Generate(input, 20'000'000);
  testing::ServerProcess server(data, {"--workers", "2", "--job-io-limit", "20MB"});
  if (!server.started()) return 1;
  std::unique_ptr<v1::JobService::Stub> stub = testing::Connect(server.address());

  v1::Job first;
  if (!testing::Submit(*stub, testing::ShardRequest(input, data + "/warm", "5MB"), &first).ok()) return 1;
  testing::WaitForEnd(*stub, first.id());
  std::vector<double> idle;
  v1::Job job;
  for (int i = 0; i < 2000; ++i) idle.push_back(GetJobMs(*stub, first.id(), &job));

  std::vector<std::string> ids;
  for (int j = 0; j < jobs; ++j) {
    v1::Job submitted;
    if (!testing::Submit(*stub, testing::ShardRequest(input, data + "/out" + std::to_string(j), "5MB"), &submitted)
             .ok())
      return 1;
    ids.push_back(submitted.id());
  }
  std::vector<std::unique_ptr<v1::JobService::Stub>> stubs;
  for (int c = 0; c < 10; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("modelsmith.bench.channel", c);
    stubs.push_back(
        v1::JobService::NewStub(grpc::CreateCustomChannel(server.address(), grpc::InsecureChannelCredentials(), args)));
  }
  std::atomic<int> complete{0};
  std::vector<std::thread> watchers;
  for (int s = 0; s < streams; ++s) {
    watchers.emplace_back([&, s] {
      std::vector<v1::JobEvent> events = testing::WatchAll(*stubs[s % stubs.size()], ids[s % ids.size()]);
      if (!events.empty() && events.back().has_job() && testing::IsTerminal(events.back().job().state())) ++complete;
    });
  }
  std::vector<double> loaded;
  int most_threads = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (bool running = true; running && std::chrono::steady_clock::now() < deadline;) {
    most_threads = std::max(most_threads, testing::ThreadCountOf(server.pid()));
    running = false;
    for (const std::string& id : ids) {
      loaded.push_back(GetJobMs(*stub, id, &job));
      running |= !testing::IsTerminal(job.state());
    }
  }
  for (std::thread& t : watchers) t.join();

  std::printf("watch_bench: %d streams over %d paced shard jobs, 2 workers, 2 cores\n", streams, jobs);
  std::printf("baseline GetJob idle          p50 %6.3f ms  p99 %6.3f ms  (%zu calls)\n", Percentile(idle, 0.5),
              Percentile(idle, 0.99), idle.size());
  std::printf("GetJob during %d streams     p50 %6.3f ms  p99 %6.3f ms  (%zu calls)  ratio p99 loaded/idle %.2f\n",
              streams, Percentile(loaded, 0.5), Percentile(loaded, 0.99), loaded.size(),
              Percentile(loaded, 0.99) / Percentile(idle, 0.99));
  std::printf("streams that saw their job's final state: %d of %d; server threads at most %d\n", complete.load(),
              streams, most_threads);
  return 0;
}

}  // namespace
}  // namespace modelsmith::bench

int main(int argc, char** argv) { return modelsmith::bench::Main(argc, argv); }
