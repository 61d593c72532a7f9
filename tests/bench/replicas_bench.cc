// replicas_bench: the job queue under N replicas. For each configuration, from the jobs' own
// timestamps:
//   submit-to-start  start_time - create_time (p50, p99) of 40 jobs submitted one at a time to an
//                    idle service, round-robin over the replicas: how soon some replica's free
//                    worker claims a job queued through any replica;
//   throughput       jobs finished per second for 200 small shard jobs submitted at once,
//                    round-robin, first submit to last end.
// Configurations, side by side: 1 replica on SQLite (the baseline: the embedded default), 1 and 3
// replicas on PostgreSQL (started by the bench on loopback, like the tests do). Every replica has
// 2 workers; all run on this machine, so 3 replicas share its cores: the figure is the queue's
// overhead and the claim latency, not a scale-out speedup. Not a test: it asserts nothing.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <thread>

#include "CLI/CLI.hpp"
#include "google/protobuf/util/time_util.h"
#include "tests/bench/bench_support.h"
#include "tests/support/job_client.h"
#include "tests/support/postgres_server.h"
#include "tests/support/subprocess.h"

namespace modelsmith::bench {
namespace {

using google::protobuf::util::TimeUtil;

struct Outcome {
  std::string name;
  std::vector<double> start_ms;  // submit-to-start of each job
  double jobs_per_second = 0;
  int succeeded = 0;
  std::string first_error;
};

constexpr int kLatencyJobs = 40;

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * values.size()))];
}

Outcome Run(const std::string& name, const std::string& data, const std::string& input, int replicas, int jobs,
            const std::string& database) {
  Outcome outcome;
  outcome.name = name;
  std::vector<std::unique_ptr<testing::ServerProcess>> servers;
  std::vector<std::unique_ptr<v1::JobService::Stub>> stubs;
  for (int r = 0; r < replicas; ++r) {
    std::vector<std::string> args = {"--workers", "2", "--replica-id", name + "-" + std::to_string(r)};
    if (!database.empty()) args.insert(args.end(), {"--database", database});
    servers.push_back(std::make_unique<testing::ServerProcess>(data, args));
    if (!servers.back()->started()) return outcome;
    stubs.push_back(testing::Connect(servers.back()->address()));
  }
  auto submit = [&](int j) -> std::string {
    v1::Job job;
    const std::string out = data + "/" + name + "/" + std::to_string(j);
    const grpc::Status status = testing::Submit(*stubs[j % replicas], testing::ShardRequest(input, out, "100KB"), &job);
    if (!status.ok()) std::fprintf(stderr, "%s: submit: %s\n", name.c_str(), status.error_message().c_str());
    return job.id();
  };
  auto wait = [&](int j, const std::string& id) {
    const v1::Job job = testing::WaitFor(
        *stubs[j % replicas], id, [](const v1::Job& k) { return testing::IsTerminal(k.state()); },
        std::chrono::seconds(600));
    if (job.state() != v1::JOB_STATE_SUCCEEDED && outcome.first_error.empty()) {
      outcome.first_error = job.error().reason() + ": " + job.error().message();
    }
    return job;
  };
  // Submit-to-start on an idle service.
  for (int j = 0; j < kLatencyJobs; ++j) {
    const v1::Job job = wait(j, submit(j));
    outcome.start_ms.push_back(
        static_cast<double>(TimeUtil::DurationToMicroseconds(job.start_time() - job.create_time())) / 1000);
  }
  // Throughput of a burst.
  std::vector<std::string> ids;
  for (int j = 0; j < jobs; ++j) ids.push_back(submit(kLatencyJobs + j));
  google::protobuf::Timestamp first_create, last_end;
  for (int j = 0; j < jobs; ++j) {
    const v1::Job job = wait(kLatencyJobs + j, ids[j]);
    outcome.succeeded += job.state() == v1::JOB_STATE_SUCCEEDED;
    if (j == 0 || job.create_time() < first_create) first_create = job.create_time();
    if (j == 0 || job.end_time() > last_end) last_end = job.end_time();
  }
  const double span = static_cast<double>(TimeUtil::DurationToMicroseconds(last_end - first_create)) / 1e6;
  outcome.jobs_per_second = span > 0 ? jobs / span : 0;
  for (auto& server : servers) server->Terminate();
  fs::remove_all(data + "/" + name);
  return outcome;
}

int Main(int argc, char** argv) {
  std::string work_dir = "bench-data/replicas";
  int jobs = 200;
  CLI::App app{"Submit-to-start latency and throughput of the job queue, 1 and 3 replicas"};
  app.add_option("--work-dir", work_dir, "where the data directory and the checkpoint go")->capture_default_str();
  app.add_option("--jobs", jobs, "small shard jobs per configuration")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  fs::create_directories(work_dir);
  work_dir = fs::absolute(work_dir).string();
  const std::string data = work_dir + "/data";
  fs::remove_all(data);
  fs::create_directories(data);
  // A Llama-shaped checkpoint of about 0.6 MB: the jobs are small, the queue is what is measured.
  const std::string input = data + "/model.safetensors";
  testing::MakeCheckpoint(input, {"--layers", "2", "--hidden", "128", "--intermediate", "256"});
  if (!fs::exists(input)) return 1;
  testing::PostgresServer postgres;
  if (!postgres.started()) {
    std::fprintf(stderr, "replicas_bench: cannot start PostgreSQL: %s\n", postgres.error().c_str());
    return 1;
  }
  std::vector<Outcome> outcomes;
  outcomes.push_back(Run("sqlite-1", data, input, 1, jobs, ""));
  outcomes.push_back(Run("postgres-1", data, input, 1, jobs, postgres.NewDatabase("one")));
  outcomes.push_back(Run("postgres-3", data, input, 3, jobs, postgres.NewDatabase("three")));

  std::printf(
      "replicas_bench: per configuration %d shard jobs one at a time (submit-to-start), then %d at once (jobs/s); "
      "%.2f MB checkpoint, 2 workers per replica, %u cores\n",
      kLatencyJobs, jobs, fs::file_size(input) / 1e6, std::thread::hardware_concurrency());
  std::printf("%-12s %10s %14s %14s %10s %16s %10s\n", "config", "succeeded", "start p50 ms", "start p99 ms", "jobs/s",
              "jobs/s vs sqlite", "p50 vs sqlite");
  const Outcome& base = outcomes[0];
  for (const Outcome& o : outcomes) {
    std::printf("%-12s %6d/%-3d %14.1f %14.1f %10.1f %16.2f %10.2f\n", o.name.c_str(), o.succeeded, jobs,
                Percentile(o.start_ms, 0.5), Percentile(o.start_ms, 0.99), o.jobs_per_second,
                base.jobs_per_second > 0 ? o.jobs_per_second / base.jobs_per_second : 0,
                Percentile(base.start_ms, 0.5) > 0 ? Percentile(o.start_ms, 0.5) / Percentile(base.start_ms, 0.5) : 0);
    if (!o.first_error.empty()) std::printf("  %s: first failure: %s\n", o.name.c_str(), o.first_error.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace modelsmith::bench

int main(int argc, char** argv) { return modelsmith::bench::Main(argc, argv); }
