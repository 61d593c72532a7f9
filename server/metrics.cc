#include "server/metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "workers/common/error.h"
#include "workers/jobs/job_kinds.h"
#include "workers/jobs/core/version.h"
#include "workers/pool/process_memory.h"
#include "workers/storage/checksum.h"

namespace modelsmith {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::MetricFamily;
using prometheus::MetricType;

std::string StateLabel(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_SUCCEEDED: return "succeeded";
    case v1::JOB_STATE_FAILED: return "failed";
    case v1::JOB_STATE_CANCELLED: return "cancelled";
    case v1::JOB_STATE_RUNNING: return "running";
    case v1::JOB_STATE_QUEUED: return "queued";
    default: return "unspecified";
  }
}

double SecondsOf(const google::protobuf::Timestamp& t) { return t.seconds() + t.nanos() / 1e9; }

MetricFamily GaugeFamily(std::string name, std::string help, double value) {
  MetricFamily family{std::move(name), std::move(help), MetricType::Gauge, {}};
  prometheus::ClientMetric metric;
  metric.gauge.value = value;
  family.metric.push_back(metric);
  return family;
}

MetricFamily CounterFamily(std::string name, std::string help, double value) {
  MetricFamily family{std::move(name), std::move(help), MetricType::Counter, {}};
  prometheus::ClientMetric metric;
  metric.counter.value = value;
  family.metric.push_back(metric);
  return family;
}

double ProcessStartTimeSeconds() {
  static const double start = [] {
    // /proc/self/stat field 22 is the start time in clock ticks since boot.
    std::ifstream stat("/proc/self/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    size_t paren = text.rfind(')');
    double ticks = 0;
    if (paren != std::string::npos) {
      std::istringstream fields(text.substr(paren + 2));
      std::string field;
      for (int i = 3; i <= 22 && fields >> field; ++i) {
        if (i == 22) ticks = std::stod(field);
      }
    }
    std::ifstream uptime_file("/proc/uptime");
    double uptime = 0;
    uptime_file >> uptime;
    const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    const double boot = now - uptime;
    return boot + ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
  }();
  return start;
}

size_t OpenFileDescriptors() {
  size_t count = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (dirent* entry = readdir(dir)) {
      if (entry->d_name[0] != '.') ++count;
    }
    closedir(dir);
    if (count > 0) --count;  // the descriptor opendir itself holds
  }
  return count;
}

// The process_* series (as the Prometheus client libraries name them) and the scheduler gauges,
// computed when scraped.
class RuntimeCollector final : public prometheus::Collectable {
 public:
  explicit RuntimeCollector(std::function<SchedulerSnapshot()> scheduler) : scheduler_(std::move(scheduler)) {}

  std::vector<MetricFamily> Collect() const override {
    std::vector<MetricFamily> families;
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const double cpu =
        usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
    rlimit files{};
    getrlimit(RLIMIT_NOFILE, &files);
    families.push_back(
        CounterFamily("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", cpu));
    families.push_back(
        GaugeFamily("process_resident_memory_bytes", "Resident memory size in bytes.", CurrentResidentBytes()));
    families.push_back(GaugeFamily("process_open_fds", "Number of open file descriptors.", OpenFileDescriptors()));
    families.push_back(GaugeFamily("process_max_fds", "Maximum number of open file descriptors.", files.rlim_cur));
    families.push_back(GaugeFamily("process_start_time_seconds",
                                   "Start time of the process since unix epoch in seconds.",
                                   ProcessStartTimeSeconds()));
    const SchedulerSnapshot s = scheduler_();
    families.push_back(GaugeFamily("modelsmith_queue_depth",
                                   "Jobs queued in the job database and not yet started (the same on every replica).",
                                   s.queue_depth));
    families.push_back(GaugeFamily("modelsmith_jobs_running",
                                   "Jobs running on any replica, from the job database (the same on every replica).",
                                   s.jobs_running));
    families.push_back(GaugeFamily(
        "modelsmith_replicas", "Replicas with a heartbeat in the last 15 seconds, from the job database.", s.replicas));
    families.push_back(
        GaugeFamily("modelsmith_workers_busy", "Workers running a job on this replica.", s.workers_busy));
    families.push_back(
        GaugeFamily("modelsmith_memory_budget_bytes", "Memory budget for admitting jobs.", s.memory_budget_bytes));
    families.push_back(GaugeFamily("modelsmith_memory_reserved_bytes", "Estimated peak memory of the running jobs.",
                                   s.memory_reserved_bytes));
    return families;
  }

 private:
  std::function<SchedulerSnapshot()> scheduler_;
};

prometheus::Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count) {
  prometheus::Histogram::BucketBoundaries bounds;
  for (int i = 0; i < count; ++i, start *= factor) bounds.push_back(start);
  return bounds;
}

}  // namespace

Metrics::Metrics(std::function<SchedulerSnapshot()> scheduler)
    : registry_(std::make_shared<prometheus::Registry>()),
      runtime_collector_(std::make_shared<RuntimeCollector>(std::move(scheduler))),
      jobs_total_(BuildCounter()
                      .Name("modelsmith_jobs_total")
                      .Help("Jobs that ended, by kind and final state.")
                      .Register(*registry_)),
      job_failures_(BuildCounter()
                        .Name("modelsmith_job_failures_total")
                        .Help("Jobs that FAILED, by kind and reason (the error's UPPER_SNAKE reason code).")
                        .Register(*registry_)),
      job_duration_(BuildHistogram()
                        .Name("modelsmith_job_duration_seconds")
                        .Help("Run time of jobs that ended, by kind.")
                        .Register(*registry_)),
      read_bytes_(BuildCounter()
                      .Name("modelsmith_read_bytes_total")
                      .Help("Bytes read by finished jobs.")
                      .Register(*registry_)
                      .Add({})),
      written_bytes_(BuildCounter()
                         .Name("modelsmith_written_bytes_total")
                         .Help("Bytes written by finished jobs.")
                         .Register(*registry_)
                         .Add({})),
      tensors_processed_(BuildCounter()
                             .Name("modelsmith_tensors_processed_total")
                             .Help("Tensors processed by finished jobs.")
                             .Register(*registry_)
                             .Add({})),
      shard_size_(BuildHistogram()
                      .Name("modelsmith_shard_size_bytes")
                      .Help("Sizes of the shard files written.")
                      .Register(*registry_)
                      .Add({}, ExponentialBuckets(1 << 20, 4, 12))),
      shard_imbalance_(BuildGauge()
                           .Name("modelsmith_shard_imbalance_ratio")
                           .Help("Largest shard over mean shard size of the last shard job.")
                           .Register(*registry_)
                           .Add({})),
      bisect_chunk_size_(BuildHistogram()
                             .Name("modelsmith_bisect_chunk_size_bytes")
                             .Help("Stored tensor bytes of the chunks bisect jobs wrote.")
                             .Register(*registry_)
                             .Add({}, ExponentialBuckets(1 << 20, 4, 12))),
      bisect_imbalance_(BuildGauge()
                            .Name("modelsmith_bisect_imbalance_ratio")
                            .Help("Largest chunk over mean chunk size of the last bisect job.")
                            .Register(*registry_)
                            .Add({})),
      job_peak_resident_(BuildGauge()
                             .Name("modelsmith_job_peak_resident_bytes")
                             .Help("Peak resident memory seen during the last finished job, by kind.")
                             .Register(*registry_)),
      store_requests_(
          BuildCounter()
              .Name("modelsmith_object_store_requests_total")
              .Help(
                  "Object store request attempts, by store, operation and HTTP status (\"error\" when none came back).")
              .Register(*registry_)),
      store_request_duration_(BuildHistogram()
                                  .Name("modelsmith_object_store_request_duration_seconds")
                                  .Help("Object store request attempt durations.")
                                  .Register(*registry_)),
      store_retries_(BuildCounter()
                         .Name("modelsmith_object_store_retries_total")
                         .Help("Object store request attempts that were retried.")
                         .Register(*registry_)),
      store_sent_bytes_(BuildCounter()
                            .Name("modelsmith_object_store_sent_bytes_total")
                            .Help("Bytes uploaded to object stores.")
                            .Register(*registry_)),
      store_received_bytes_(BuildCounter()
                                .Name("modelsmith_object_store_received_bytes_total")
                                .Help("Bytes downloaded from object stores.")
                                .Register(*registry_)) {
  BuildGauge()
      .Name("modelsmith_build_info")
      .Help("Build identity; the value is always 1.")
      .Register(*registry_)
      .Add({{"version", kModelsmithVersion}, {"revision", kModelsmithGitRevision}})
      .Set(1);
  // Every kind and final state from the start, so rate() works before the first job ends.
  for (v1::JobKind kind : {v1::JOB_KIND_CONVERT, v1::JOB_KIND_QUANTIZE, v1::JOB_KIND_SHARD, v1::JOB_KIND_BISECT,
                           v1::JOB_KIND_LORA_MERGE}) {
    for (v1::JobState state : {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED, v1::JOB_STATE_CANCELLED}) {
      jobs_total_.Add({{"kind", std::string(KindName(kind))}, {"state", StateLabel(state)}});
    }
  }
}

Metrics::~Metrics() = default;

absl::StatusOr<int> Metrics::Serve(const std::string& address, const Serving& serving) {
  const std::string& basic_auth_file = serving.basic_auth_file;
  std::map<std::string, std::string> users;  // user -> SHA-256 hex of the password
  if (!basic_auth_file.empty()) {
    std::ifstream in(basic_auth_file);
    if (!in) {
      return MakeError(absl::StatusCode::kNotFound, "METRICS_AUTH_FILE_INVALID",
                       absl::StrCat("cannot read --metrics-auth-file '", basic_auth_file, "'"));
    }
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      if (size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
      std::vector<absl::string_view> words = absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
      if (words.empty()) continue;
      absl::string_view hex = words.size() == 2 ? words[1] : "";
      if (words.size() != 2 || !absl::ConsumePrefix(&hex, "sha256:") || hex.size() != 64) {
        return MakeError(
            absl::StatusCode::kInvalidArgument, "METRICS_AUTH_FILE_INVALID",
            absl::StrCat("--metrics-auth-file '", basic_auth_file, "' line ", number, ": expected 'USER sha256:HEX'"));
      }
      users[std::string(words[0])] = absl::AsciiStrToLower(hex);
    }
  }
  const bool tls = !serving.tls_cert_file.empty();
  try {
    // With TLS, civetweb serves plaintext on a private loopback port behind the TLS front.
    exposer_ = std::make_unique<prometheus::Exposer>(tls ? std::string("127.0.0.1:0") : address, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on '", address, "': ", e.what()));
  }
  if (!basic_auth_file.empty()) {
    exposer_->RegisterAuth(
        [users = std::move(users)](const std::string& user, const std::string& password) {
          auto it = users.find(user);
          return it != users.end() && it->second == Sha256Hex(password);
        },
        "modelsmithd");
  }
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(runtime_collector_);
  std::vector<int> ports = exposer_->GetListeningPorts();
  if (ports.empty()) return absl::UnavailableError(absl::StrCat("cannot serve metrics on '", address, "'"));
  if (!tls) return ports.front();
  absl::StatusOr<std::unique_ptr<MetricsTlsFront>> front =
      MetricsTlsFront::Start(address, ports.front(), serving.tls_cert_file, serving.tls_key_file);
  if (!front.ok()) return front.status();
  tls_front_ = *std::move(front);
  return tls_front_->port();
}

void Metrics::OnRequest(std::string_view store, std::string_view op, std::string_view code, double seconds,
                        uint64_t bytes_sent, uint64_t bytes_received) {
  const std::string s(store);
  store_requests_.Add({{"store", s}, {"op", std::string(op)}, {"code", std::string(code)}}).Increment();
  store_request_duration_
      .Add({{"store", s}, {"op", std::string(op)}},
           prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60})
      .Observe(seconds);
  if (bytes_sent > 0) store_sent_bytes_.Add({{"store", s}}).Increment(bytes_sent);
  if (bytes_received > 0) store_received_bytes_.Add({{"store", s}}).Increment(bytes_received);
}

void Metrics::OnRetry(std::string_view store, std::string_view op) {
  store_retries_.Add({{"store", std::string(store)}, {"op", std::string(op)}}).Increment();
}

void Metrics::RecordJobFinished(const v1::Job& job) {
  const std::string kind(KindName(job.kind()));
  jobs_total_.Add({{"kind", kind}, {"state", StateLabel(job.state())}}).Increment();
  if (job.state() == v1::JOB_STATE_FAILED) {
    // Reasons are the service's own codes, a bounded set: fit for a label.
    job_failures_.Add({{"kind", kind}, {"reason", job.error().reason().empty() ? "UNKNOWN" : job.error().reason()}})
        .Increment();
  }
  if (job.has_start_time() && job.has_end_time()) {
    job_duration_
        .Add({{"kind", kind}},
             prometheus::Histogram::BucketBoundaries{0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200})
        .Observe(std::max(0.0, SecondsOf(job.end_time()) - SecondsOf(job.start_time())));
  }
  const v1::JobFigures& figures = job.result().figures();
  read_bytes_.Increment(figures.bytes_read());
  written_bytes_.Increment(figures.bytes_written());
  tensors_processed_.Increment(figures.tensors());
  if (figures.peak_resident_bytes() > 0) {
    job_peak_resident_.Add({{"kind", kind}}).Set(figures.peak_resident_bytes());
  }
  if (job.state() == v1::JOB_STATE_SUCCEEDED && figures.has_shard()) {
    for (uint64_t size : figures.shard().shard_sizes_bytes()) shard_size_.Observe(size);
    shard_imbalance_.Set(figures.shard().imbalance_ratio());
  }
  if (job.state() == v1::JOB_STATE_SUCCEEDED && figures.has_bisect()) {
    for (uint64_t size : figures.bisect().chunk_sizes_bytes()) bisect_chunk_size_.Observe(size);
    bisect_imbalance_.Set(figures.bisect().imbalance_ratio());
  }
}

}  // namespace modelsmith
