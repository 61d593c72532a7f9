#include "client/run_command.h"

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/util/json_util.h"
#include "client/render.h"
#include "workers/common/error.h"
#include "workers/jobs/job_kinds.h"
#include "workers/pool/process_memory.h"
#include "workers/storage/s3_object_store.h"

namespace modelsmith::cli {
namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop = true; }

// Progress and warnings to stderr; stdout stays for the result.
class TerminalContext final : public JobContext {
 public:
  TerminalContext() : view_(stderr) {}
  bool stop_requested() const override { return g_stop; }
  void ReportProgress(const v1::Progress& progress) override {
    v1::JobEvent event;
    *event.mutable_progress() = progress;
    std::lock_guard lock(mutex_);
    view_.OnEvent(event);
  }
  void Warn(absl::string_view code, absl::string_view message, absl::string_view tensor) override {
    v1::JobEvent event;
    event.mutable_warning()->set_code(std::string(code));
    event.mutable_warning()->set_message(std::string(message));
    event.mutable_warning()->set_tensor(std::string(tensor));
    std::lock_guard lock(mutex_);
    view_.OnEvent(event);
  }
  void Log(absl::string_view message) override {
    v1::JobEvent event;
    event.mutable_log()->set_message(std::string(message));
    std::lock_guard lock(mutex_);
    view_.OnEvent(event);
  }
  void Finish() {
    std::lock_guard lock(mutex_);
    view_.Finish();
  }

 private:
  std::mutex mutex_;
  ProgressView view_;
};

absl::StatusOr<v1::JobSpec> ReadSpec(const std::string& path) {
  std::stringstream text;
  if (path == "-") {
    text << std::cin.rdbuf();
  } else {
    std::ifstream in(path);
    if (!in) {
      return MakeError(absl::StatusCode::kNotFound, "SPEC_NOT_FOUND",
                       absl::StrCat("cannot read spec file '", path, "'"));
    }
    text << in.rdbuf();
  }
  v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  auto status = google::protobuf::util::JsonStringToMessage(text.str(), &spec, options);
  if (!status.ok()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_SPEC_JSON",
                     absl::StrCat("spec '", path, "' is not a modelsmith.v1.JobSpec: ", status.message().as_string()));
  }
  return spec;
}

}  // namespace

int RunCommand(const std::string& spec_path, bool json) {
  absl::StatusOr<v1::JobSpec> spec = ReadSpec(spec_path);
  if (!spec.ok()) return ReportError(spec.status());
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  // The caller owns this machine: no roots restrict paths here. S3 comes from the AWS_*
  // environment when credentials are set.
  std::unique_ptr<ObjectStore> s3;
  if (absl::StatusOr<S3Config> config = S3Config::FromEnvironment(); config.ok()) {
    if (absl::Status valid = config->Validate(); !valid.ok()) return ReportError(valid);
    s3 = std::make_unique<S3ObjectStore>(*std::move(config), nullptr);
  }
  StorageRouter router({}, std::move(s3));
  JobRun run;
  run.job_id = absl::StrCat("run-", absl::Hex(std::random_device{}(), absl::kZeroPad8));
  run.spec = *spec;
  run.router = &router;
  TerminalContext context;
  absl::StatusOr<v1::JobResult> result = RunJob(run, context);
  context.Finish();
  if (!result.ok()) {
    if (g_stop && absl::IsCancelled(result.status())) {
      absl::FPrintF(stderr, "stopped by signal; nothing was published\n");
      return kExitFailure;
    }
    return ReportError(result.status());
  }
  result->mutable_figures()->set_peak_resident_bytes(
      std::max(result->figures().peak_resident_bytes(), PeakResidentBytes()));
  if (json) {
    std::printf("%s\n", ToJson(*result, true).c_str());
  } else {
    v1::Job job;
    job.set_id(run.job_id);
    job.set_kind(KindOf(run.spec));
    job.set_state(v1::JOB_STATE_SUCCEEDED);
    job.set_attempt(1);
    *job.mutable_result() = *result;
    PrintJob(job, stdout);
  }
  return kExitOk;
}

}  // namespace modelsmith::cli
