#include "server/job_manager.h"

#include <random>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/time_util.h"
#include "server/logging.h"
#include "workers/common/error.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/job_kinds.h"
#include "workers/storage/checksum.h"

namespace modelsmith {
namespace {

using google::protobuf::util::TimeUtil;

constexpr size_t kMaxRequestIdLength = 128;
constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;
constexpr size_t kMaxWarningsPerJob = 1000;
constexpr size_t kMaxLogLinesPerJob = 1000;
constexpr auto kProgressPersistInterval = std::chrono::seconds(2);
constexpr auto kCancelWait = std::chrono::seconds(5);

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED;
}

std::string NewJobId() {
  static std::mutex mutex;
  static std::mt19937_64 rng(std::random_device{}());
  std::lock_guard lock(mutex);
  return absl::StrCat("job-", absl::Hex(rng(), absl::kZeroPad16));
}

// Same spec, same bytes: deterministic serialization, then SHA-256.
std::string SpecFingerprint(const v1::JobSpec& spec) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    spec.SerializeToCodedStream(&coded);
  }
  return Sha256Hex(bytes);
}

v1::JobEvent StateEvent(const v1::Job& job, std::string message) {
  v1::JobEvent event;
  v1::StateChange* change = event.mutable_state_change();
  change->set_state(job.state());
  change->set_attempt(job.attempt());
  if (job.has_error()) *change->mutable_error() = job.error();
  change->set_message(std::move(message));
  return event;
}

v1::JobError ErrorOf(const absl::Status& status) {
  v1::JobError error;
  error.set_code(static_cast<int32_t>(status.code()));
  error.set_reason(ReasonOf(status));
  error.set_message(std::string(status.message()));
  return error;
}

// Page tokens bind the position to the filter they were made for.
std::string MakePageToken(int64_t before_seq, const v1::ListJobsRequest& request) {
  return absl::WebSafeBase64Escape(absl::StrCat("v1:", before_seq, ":", request.state(), ":", request.kind()));
}

absl::StatusOr<int64_t> ParsePageToken(const v1::ListJobsRequest& request) {
  if (request.page_token().empty()) return 0;
  std::string decoded;
  auto invalid = [] {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_PAGE_TOKEN",
                     "'page_token' is not a token from a previous ListJobs with the same filter",
                     {{"field", "page_token"}});
  };
  if (!absl::WebSafeBase64Unescape(request.page_token(), &decoded)) return invalid();
  std::vector<std::string> parts = absl::StrSplit(decoded, ':');
  int64_t seq = 0;
  int state = 0;
  int kind = 0;
  if (parts.size() != 4 || parts[0] != "v1" || !absl::SimpleAtoi(parts[1], &seq) ||
      !absl::SimpleAtoi(parts[2], &state) || !absl::SimpleAtoi(parts[3], &kind) || seq <= 0 ||
      state != request.state() || kind != request.kind()) {
    return invalid();
  }
  return seq;
}

}  // namespace

// The running job's view of the manager.
class JobManager::Context final : public JobContext {
 public:
  Context(JobManager& manager, std::shared_ptr<Tracked> tracked) : manager_(manager), tracked_(std::move(tracked)) {}

  bool stop_requested() const override { return tracked_->cancel || tracked_->interrupt; }

  void ReportProgress(const v1::Progress& progress) override {
    std::optional<v1::Job> to_persist;
    {
      std::lock_guard lock(tracked_->mutex);
      *tracked_->job.mutable_progress() = progress;
      tracked_->progress_seq = ++tracked_->seq;
      tracked_->changed.notify_all();
      const auto now = std::chrono::steady_clock::now();
      if (now - tracked_->last_persist >= kProgressPersistInterval) {
        tracked_->last_persist = now;
        to_persist = tracked_->job;
      }
    }
    WakeWatchers(*tracked_);
    if (to_persist) manager_.Persist(*to_persist);
  }

  void Warn(absl::string_view code, absl::string_view message, absl::string_view tensor) override {
    LogWarn(tracked_->job.id(), absl::StrCat(code, ": ", message));
    {
      std::lock_guard lock(tracked_->mutex);
      if (static_cast<size_t>(tracked_->job.warnings_size()) >= kMaxWarningsPerJob) return;
      v1::Warning* warning = tracked_->job.add_warnings();
      warning->set_code(std::string(code));
      warning->set_message(std::string(message));
      warning->set_tensor(std::string(tensor));
      v1::JobEvent event;
      *event.mutable_warning() = *warning;
      manager_.AppendEvent(*tracked_, std::move(event));
    }
    WakeWatchers(*tracked_);
  }

  void Log(absl::string_view message) override {
    LogInfo(tracked_->job.id(), message);
    {
      std::lock_guard lock(tracked_->mutex);
      if (tracked_->log_lines++ >= kMaxLogLinesPerJob) return;
      v1::JobEvent event;
      event.mutable_log()->set_level("info");
      event.mutable_log()->set_message(std::string(message));
      manager_.AppendEvent(*tracked_, std::move(event));
    }
    WakeWatchers(*tracked_);
  }

 private:
  JobManager& manager_;
  std::shared_ptr<Tracked> tracked_;
};

JobManager::JobManager(JobStore& store, const StorageRouter& router, WorkerPool& pool, Metrics* metrics,
                       uint64_t io_bytes_per_second)
    : store_(store), router_(router), pool_(pool), metrics_(metrics), io_bytes_per_second_(io_bytes_per_second) {}

JobManager::~JobManager() { Close(); }

void JobManager::AppendEvent(Tracked& tracked, v1::JobEvent event) {
  *event.mutable_time() = TimeUtil::GetCurrentTime();
  tracked.events.emplace_back(++tracked.seq, std::move(event));
  tracked.changed.notify_all();
}

void JobManager::WakeWatchers(Tracked& tracked) {
  std::vector<std::function<void()>> wakers;
  {
    std::lock_guard lock(tracked.mutex);
    wakers.reserve(tracked.wakers.size());
    for (const auto& [number, wake] : tracked.wakers) wakers.push_back(wake);
  }
  for (const std::function<void()>& wake : wakers) wake();
}

void JobManager::Persist(const v1::Job& job) {
  if (absl::Status s = store_.Update(job); !s.ok()) {
    LogError(job.id(), absl::StrCat("cannot persist job: ", s.message()));
  }
}

std::shared_ptr<JobManager::Tracked> JobManager::Find(const std::string& id) const {
  std::lock_guard lock(mutex_);
  auto it = tracked_.find(id);
  return it == tracked_.end() ? nullptr : it->second;
}

absl::Status JobManager::Recover() {
  absl::StatusOr<std::vector<v1::Job>> running = store_.ListInState(v1::JOB_STATE_RUNNING);
  if (!running.ok()) return running.status();
  for (v1::Job& job : *running) {
    if (job.attempt() >= kMaxInterruptedAttempts) {
      job.set_state(v1::JOB_STATE_FAILED);
      *job.mutable_error() = ErrorOf(
          MakeError(absl::StatusCode::kAborted, "INTERRUPTED",
                    absl::StrCat("the server stopped while the job ran, ", job.attempt(), " times; giving up")));
      *job.mutable_end_time() = TimeUtil::GetCurrentTime();
      LogWarn(job.id(), "failed: interrupted too many times");
      Persist(job);
      if (metrics_ != nullptr) metrics_->RecordJobFinished(job);
      continue;
    }
    job.set_state(v1::JOB_STATE_QUEUED);
    v1::Warning* warning = job.add_warnings();
    warning->set_code("JOB_INTERRUPTED");
    warning->set_message(absl::StrCat("the server stopped while attempt ", job.attempt(), " ran; the job runs again"));
    LogInfo(job.id(), absl::StrCat("requeued after attempt ", job.attempt(), " was interrupted"));
    Persist(job);
  }
  absl::StatusOr<std::vector<v1::Job>> queued = store_.ListInState(v1::JOB_STATE_QUEUED);
  if (!queued.ok()) return queued.status();
  for (v1::Job& job : *queued) {
    auto tracked = std::make_shared<Tracked>();
    tracked->job = std::move(job);
    Schedule(tracked);
  }
  return absl::OkStatus();
}

void JobManager::Schedule(const std::shared_ptr<Tracked>& tracked) {
  const std::string id = tracked->job.id();
  {
    std::lock_guard lock(mutex_);
    tracked_[id] = tracked;
  }
  pool_.Submit(id, tracked->job.estimated_peak_bytes(), [this, tracked] { Execute(tracked); });
}

absl::Status JobManager::CheckOutputFree(const JobOutput& output) {
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> held = store_.ListHeldOutputs();
  if (!held.ok()) return held.status();
  for (const auto& [job_id, key] : *held) {
    if (!OutputsOverlap(key, output.uri)) continue;
    return MakeError(absl::StatusCode::kFailedPrecondition, "OUTPUT_BUSY",
                     absl::StrCat("output '", output.uri, "' is held by job ", job_id, ", which writes '", key,
                                  "' and has not ended; cancel it or wait for it to end"),
                     {{"field", output.field}, {"job_id", job_id}});
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> JobManager::Submit(const v1::JobSpec& spec, const std::string& request_id,
                                           const std::function<bool()>& caller_waiting, const std::string& owner) {
  if (draining_) {
    return MakeError(absl::StatusCode::kUnavailable, "SHUTTING_DOWN",
                     "the server is shutting down and accepts no new jobs");
  }
  if (request_id.size() > kMaxRequestIdLength) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_REQUEST_ID",
                     absl::StrCat("'request_id' has ", request_id.size(), " characters; at most ", kMaxRequestIdLength,
                                  " are allowed"),
                     {{"field", "request_id"}});
  }
  const std::string fingerprint = SpecFingerprint(spec);
  // A repeated request_id answers with its job and nothing else; REQUIRES submit_mutex_.
  auto find_repeat = [&]() -> absl::StatusOr<std::optional<v1::Job>> {
    if (request_id.empty()) return std::nullopt;
    auto existing = store_.FindByRequestId(request_id);
    if (!existing.ok()) return existing.status();
    if (!existing->has_value()) return std::nullopt;
    if ((*existing)->second != fingerprint) {
      return MakeError(absl::StatusCode::kAlreadyExists, "REQUEST_ID_REUSED",
                       absl::StrCat("request_id '", request_id, "' was used for job ", (*existing)->first.id(),
                                    " with a different spec"),
                       {{"field", "request_id"}, {"job_id", (*existing)->first.id()}});
    }
    absl::StatusOr<v1::Job> job = Get((*existing)->first.id());
    if (!job.ok()) return job.status();
    return *std::move(job);
  };
  // An output that does not resolve is reported by the preflight, in its order of checks.
  absl::StatusOr<JobOutput> output = ResolveJobOutput(spec, router_);
  {
    std::lock_guard submit_lock(submit_mutex_);
    absl::StatusOr<std::optional<v1::Job>> repeat = find_repeat();
    if (!repeat.ok()) return repeat.status();
    if (*repeat) return **repeat;
  }
  // The spec parses once; a busy output is reported as busy before the input is opened, and
  // never as "not empty". The rest of the preflight may read a large input: no lock is held, so
  // nothing else waits for it.
  auto output_free = [&]() -> absl::Status {
    if (!output.ok()) return absl::OkStatus();
    std::lock_guard submit_lock(submit_mutex_);
    return CheckOutputFree(*output);
  };
  if (before_preflight_hook_) before_preflight_hook_(spec);
  absl::StatusOr<uint64_t> estimate = PreflightJob(spec, router_, output_free);
  if (!estimate.ok()) return estimate.status();
  if (!output.ok()) return output.status();

  auto tracked = std::make_shared<Tracked>();
  v1::Job& job = tracked->job;
  {
    std::lock_guard submit_lock(submit_mutex_);
    if (caller_waiting && !caller_waiting()) {
      return MakeError(absl::StatusCode::kDeadlineExceeded, "CALLER_GONE",
                       "the caller's deadline passed or it cancelled before the job was created; no job was created");
    }
    // Again under the lock that covers the insert: a submit that raced this one may have won.
    absl::StatusOr<std::optional<v1::Job>> repeat = find_repeat();
    if (!repeat.ok()) return repeat.status();
    if (*repeat) return **repeat;
    if (absl::Status s = CheckOutputFree(*output); !s.ok()) return s;
    if (max_active_per_owner_ > 0) {
      size_t active = 0;
      {
        std::lock_guard lock(mutex_);
        for (const auto& [id, other] : tracked_) {
          std::lock_guard job_lock(other->mutex);
          active += !other->ended && other->job.owner() == owner;
        }
      }
      if (active >= max_active_per_owner_) {
        return MakeError(absl::StatusCode::kResourceExhausted, "QUOTA_EXCEEDED",
                         absl::StrCat("'", owner, "' has ", active, " queued or running jobs; at most ",
                                      max_active_per_owner_, " are allowed (--max-queued-per-principal)"),
                         {{"principal", owner}});
      }
    }
    job.set_id(NewJobId());
    job.set_owner(owner);
    job.set_kind(KindOf(spec));
    *job.mutable_spec() = spec;
    job.set_state(v1::JOB_STATE_QUEUED);
    *job.mutable_create_time() = TimeUtil::GetCurrentTime();
    job.set_request_id(request_id);
    job.set_estimated_peak_bytes(*estimate);
    if (absl::Status s = store_.Insert(job, fingerprint, output->uri); !s.ok()) return s;
  }
  LogInfo(job.id(),
          absl::StrCat("queued ", KindName(job.kind()), " job (estimated peak memory ", *estimate, " bytes)"));
  v1::Job snapshot = job;
  Schedule(tracked);
  return snapshot;
}

void JobManager::CancelBeforeStart(Tracked& tracked) {
  v1::Job& job = tracked.job;
  job.set_state(v1::JOB_STATE_CANCELLED);
  *job.mutable_error() = ErrorOf(MakeError(absl::StatusCode::kCancelled, "CANCELLED", "cancelled by request"));
  *job.mutable_end_time() = TimeUtil::GetCurrentTime();
  AppendEvent(tracked, StateEvent(job, "cancelled before it started"));
  Persist(job);
}

void JobManager::Execute(const std::shared_ptr<Tracked>& tracked) {
  if (before_start_hook_) before_start_hook_(tracked->job.id());
  JobRun run;
  {
    // One critical section decides whether the job starts: a cancel that took this lock first
    // has already ended it (CANCELLED, persisted), and one that comes later finds it started.
    std::lock_guard lock(tracked->mutex);
    // While draining nothing new starts: the job stays QUEUED for the next process.
    if (tracked->ended || draining_) return;
    v1::Job& job = tracked->job;
    tracked->started = true;
    job.set_state(v1::JOB_STATE_RUNNING);
    job.set_attempt(job.attempt() + 1);
    *job.mutable_start_time() = TimeUtil::GetCurrentTime();
    job.clear_end_time();
    job.clear_progress();
    job.clear_error();
    AppendEvent(*tracked, StateEvent(job, absl::StrCat("attempt ", job.attempt(), " started")));
    Persist(job);
    run.job_id = job.id();
    run.attempt = job.attempt();
    run.spec = job.spec();
    run.owner = job.owner();
    run.router = &router_;
    run.io_bytes_per_second = io_bytes_per_second_;
  }
  WakeWatchers(*tracked);
  {
    std::lock_guard lock(mutex_);
    ++running_;
  }
  LogInfo(run.job_id, absl::StrCat("running, attempt ", run.attempt));
  Context context(*this, tracked);
  absl::StatusOr<v1::JobResult> result = RunJob(run, context);  // exceptions become statuses
  {
    std::lock_guard lock(tracked->mutex);
    v1::Job& job = tracked->job;
    std::string message;
    if (result.ok()) {
      job.set_state(v1::JOB_STATE_SUCCEEDED);
      *job.mutable_result() = *std::move(result);
      message = "succeeded";
    } else if (tracked->interrupt && absl::IsCancelled(result.status())) {
      job.set_state(v1::JOB_STATE_QUEUED);
      message = "interrupted by shutdown; runs again after restart";
    } else if (tracked->cancel && absl::IsCancelled(result.status())) {
      job.set_state(v1::JOB_STATE_CANCELLED);
      *job.mutable_error() = ErrorOf(MakeError(absl::StatusCode::kCancelled, "CANCELLED", "cancelled by request"));
      message = "cancelled";
    } else {
      job.set_state(v1::JOB_STATE_FAILED);
      *job.mutable_error() = ErrorOf(result.status());
      message = absl::StrCat("failed: ", result.status().message());
    }
    if (IsTerminal(job.state())) *job.mutable_end_time() = TimeUtil::GetCurrentTime();
    AppendEvent(*tracked, StateEvent(job, message));
    Persist(job);
    if (job.state() == v1::JOB_STATE_FAILED)
      LogWarn(job.id(), message);
    else
      LogInfo(job.id(), message);
  }
  WakeWatchers(*tracked);
  Finish(tracked);
  {
    std::lock_guard lock(mutex_);
    --running_;
  }
  running_changed_.notify_all();
}

void JobManager::Finish(const std::shared_ptr<Tracked>& tracked) {
  v1::Job final_job;
  {
    std::lock_guard lock(tracked->mutex);
    tracked->ended = true;
    tracked->changed.notify_all();
    final_job = tracked->job;
  }
  WakeWatchers(*tracked);
  {
    std::lock_guard lock(mutex_);
    tracked_.erase(final_job.id());
  }
  if (metrics_ != nullptr && IsTerminal(final_job.state())) metrics_->RecordJobFinished(final_job);
}

absl::StatusOr<v1::Job> JobManager::Get(const std::string& id) {
  if (std::shared_ptr<Tracked> tracked = Find(id)) {
    std::lock_guard lock(tracked->mutex);
    return tracked->job;
  }
  absl::StatusOr<v1::Job> job = store_.Get(id);
  if (!job.ok())
    return WithReason(job.status(), absl::IsNotFound(job.status()) ? "JOB_NOT_FOUND" : ReasonOf(job.status()),
                      {{"job_id", id}});
  return job;
}

absl::StatusOr<v1::ListJobsResponse> JobManager::List(const v1::ListJobsRequest& request) {
  if (request.page_size() < 0) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_PAGE_SIZE", "'page_size' must not be negative",
                     {{"field", "page_size"}});
  }
  if (!v1::JobState_IsValid(request.state()) || !v1::JobKind_IsValid(request.kind())) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_ENUM", "unknown state or kind filter",
                     {{"field", v1::JobState_IsValid(request.state()) ? "kind" : "state"}});
  }
  const int page_size = request.page_size() == 0 ? kDefaultPageSize : std::min(request.page_size(), kMaxPageSize);
  absl::StatusOr<int64_t> before = ParsePageToken(request);
  if (!before.ok()) return before.status();
  absl::StatusOr<std::vector<StoredJob>> rows = store_.List(request.state(), request.kind(), *before, page_size + 1);
  if (!rows.ok()) return rows.status();
  v1::ListJobsResponse response;
  for (size_t i = 0; i < rows->size() && i < static_cast<size_t>(page_size); ++i) {
    StoredJob& row = (*rows)[i];
    v1::Job* job = response.add_jobs();
    *job = std::move(row.job);
    if (std::shared_ptr<Tracked> tracked = Find(job->id())) {
      std::lock_guard lock(tracked->mutex);
      *job = tracked->job;  // fresher progress than the store
    }
  }
  if (rows->size() > static_cast<size_t>(page_size)) {
    response.set_next_page_token(MakePageToken((*rows)[page_size - 1].seq, request));
  }
  return response;
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& id) {
  std::shared_ptr<Tracked> tracked = Find(id);
  if (tracked == nullptr) {
    absl::StatusOr<v1::Job> job = Get(id);
    if (!job.ok()) return job.status();
    return MakeError(absl::StatusCode::kFailedPrecondition, "JOB_ALREADY_ENDED",
                     absl::StrCat("job ", id, " already ended (", v1::JobState_Name(job->state()), ")"),
                     {{"job_id", id}});
  }
  {
    // A job that has just ended can still be tracked for a moment (until Finish forgets it).
    std::lock_guard lock(tracked->mutex);
    if (tracked->ended) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "JOB_ALREADY_ENDED",
                       absl::StrCat("job ", id, " already ended (", v1::JobState_Name(tracked->job.state()), ")"),
                       {{"job_id", id}});
    }
  }
  bool cancelled_before_start = false;
  {
    std::lock_guard lock(tracked->mutex);
    if (!tracked->started && !tracked->ended) {
      // Queued in the pool, or admitted and not yet started: either way it never runs now.
      CancelBeforeStart(*tracked);
      cancelled_before_start = true;
    }
  }
  if (cancelled_before_start) {
    pool_.RemoveQueued(id);  // frees its place in the pool's queue, if it is still there
    LogInfo(id, "cancelled before it started");
    WakeWatchers(*tracked);
    Finish(tracked);
  } else {
    tracked->cancel = true;
    LogInfo(id, "cancel requested");
    std::unique_lock lock(tracked->mutex);
    tracked->changed.wait_for(lock, kCancelWait, [&] { return tracked->ended; });
  }
  std::lock_guard lock(tracked->mutex);
  return tracked->job;
}

absl::StatusOr<std::shared_ptr<JobWatch>> JobManager::OpenWatch(const std::string& id, std::function<void()> wake) {
  if (std::shared_ptr<Tracked> tracked = Find(id)) return JobWatch::OfLive(tracked, std::move(wake), closed_);
  absl::StatusOr<v1::Job> job = Get(id);
  if (!job.ok()) return job.status();
  return JobWatch::OfEnded(*std::move(job));
}

void JobManager::BeginDrain() { draining_ = true; }

bool JobManager::WaitForRunning(std::chrono::milliseconds grace) {
  std::unique_lock lock(mutex_);
  return running_changed_.wait_for(lock, grace, [&] { return running_ == 0; });
}

void JobManager::InterruptRunning() {
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, tracked] : tracked_) tracked->interrupt = true;
  }
  std::unique_lock lock(mutex_);
  running_changed_.wait(lock, [&] { return running_ == 0; });
}

void JobManager::Close() {
  closed_ = true;
  std::vector<std::shared_ptr<Tracked>> live;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, tracked] : tracked_) live.push_back(tracked);
  }
  for (const std::shared_ptr<Tracked>& tracked : live) {
    {
      std::lock_guard job_lock(tracked->mutex);
      tracked->changed.notify_all();
    }
    WakeWatchers(*tracked);
  }
}

size_t JobManager::running() const {
  std::lock_guard lock(mutex_);
  return running_;
}

}  // namespace modelsmith
