#include "server/job_manager.h"

#include <unistd.h>

#include <climits>
#include <random>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/time_util.h"
#include "server/clock.h"
#include "server/job_state_events.h"
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
// Progress is written to the store at most this often per job: for watchers on other replicas a
// few times a second, otherwise only so that a restart shows recent progress.
constexpr auto kSharedProgressInterval = std::chrono::milliseconds(250);
constexpr auto kLocalProgressInterval = std::chrono::seconds(2);
// How often remote watchers' views read progress from the store; with a shared store, new events
// also wake them at once (JobStore::WaitForChange).
constexpr auto kSharedPollInterval = std::chrono::milliseconds(200);
// On a one-server store views are only of queued jobs, which this server claims itself.
constexpr auto kLocalPollInterval = std::chrono::seconds(1);

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

std::string DefaultReplicaId() {
  char host[HOST_NAME_MAX + 1] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "modelsmithd");
  return absl::StrCat(host, "-", getpid());
}

}  // namespace

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

// The running job's view of the manager.
class JobManager::Context final : public JobContext {
 public:
  Context(JobManager& manager, std::shared_ptr<Tracked> tracked) : manager_(manager), tracked_(std::move(tracked)) {}

  bool stop_requested() const override { return tracked_->cancel || tracked_->interrupt || tracked_->lease_lost; }

  void ReportProgress(const v1::Progress& progress) override {
    {
      std::lock_guard lock(tracked_->mutex);
      *tracked_->job.mutable_progress() = progress;
      tracked_->progress_seq = ++tracked_->seq;
      tracked_->changed.notify_all();
      const auto now = std::chrono::steady_clock::now();
      const auto interval =
          manager_.store_.shared()
              ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(kSharedProgressInterval)
              : kLocalProgressInterval;
      if (now - tracked_->last_persist >= interval) {
        tracked_->last_persist = now;
        manager_.Persist(*tracked_);
      }
    }
    manager_.WakeWatchers(*tracked_);
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
    manager_.WakeWatchers(*tracked_);
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
    manager_.WakeWatchers(*tracked_);
  }

  absl::Status ConfirmStillOwner() const override {
    if (tracked_->lease_lost) return LeaseLostError(tracked_->job.id());
    absl::Status renewed =
        manager_.store_.RenewLease(tracked_->job.id(), tracked_->lease_token, manager_.options_.lease_seconds);
    if (ReasonOf(renewed) == "LEASE_LOST") manager_.LoseLease(*tracked_);
    return renewed;
  }

 private:
  JobManager& manager_;
  std::shared_ptr<Tracked> tracked_;
};

JobManager::JobManager(JobStore& store, const StorageRouter& router, WorkerPool& pool, Metrics* metrics,
                       JobManagerOptions options)
    : store_(store),
      router_(router),
      pool_(pool),
      metrics_(metrics),
      options_(std::move(options)),
      feed_(store, store.shared() ? std::chrono::duration_cast<std::chrono::milliseconds>(kSharedPollInterval)
                                  : std::chrono::milliseconds(kLocalPollInterval)) {
  if (options_.replica_id.empty()) options_.replica_id = DefaultReplicaId();
}

JobManager::~JobManager() { Close(); }

void JobManager::AppendEvent(Tracked& tracked, v1::JobEvent event) {
  *event.mutable_time() = NowTimestamp();
  if (store_.shared()) tracked.outbox.push_back(event);
  tracked.events.emplace_back(++tracked.seq, std::move(event));
  tracked.changed.notify_all();
}

void JobManager::FlushEvents(Tracked& tracked) {
  if (!store_.shared()) return;
  std::lock_guard order(tracked.outbox_mutex);
  std::vector<v1::JobEvent> events;
  std::string id;
  {
    std::lock_guard lock(tracked.mutex);
    events.swap(tracked.outbox);
    id = tracked.job.id();
  }
  for (const v1::JobEvent& event : events) {
    if (absl::Status s = store_.AppendEvent(id, event); !s.ok()) {
      LogError(id, absl::StrCat("cannot record an event for other replicas: ", s.message()));
    }
  }
}

void JobManager::WakeWatchers(Tracked& tracked) {
  FlushEvents(tracked);
  std::vector<std::function<void()>> wakers;
  {
    std::lock_guard lock(tracked.mutex);
    wakers.reserve(tracked.wakers.size());
    for (const auto& [number, wake] : tracked.wakers) wakers.push_back(wake);
  }
  for (const std::function<void()>& wake : wakers) wake();
}

void JobManager::Persist(Tracked& tracked) {
  if (tracked.lease_lost) return;
  absl::Status s = store_.UpdateFenced(tracked.job, tracked.lease_token);
  if (ReasonOf(s) == "LEASE_LOST") {
    LoseLease(tracked);
  } else if (!s.ok()) {
    LogError(tracked.job.id(), absl::StrCat("cannot persist job: ", s.message()));
  }
}

std::shared_ptr<JobManager::Tracked> JobManager::Find(const std::string& id) const {
  std::lock_guard lock(mutex_);
  auto it = tracked_.find(id);
  return it == tracked_.end() ? nullptr : it->second;
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

  v1::Job job;
  {
    std::lock_guard submit_lock(submit_mutex_);
    if (caller_waiting && !caller_waiting()) {
      return MakeError(absl::StatusCode::kDeadlineExceeded, "CALLER_GONE",
                       "the caller's deadline passed or it cancelled before the job was created; no job was created");
    }
    // The store's submit lock makes the checks and the insert one step across every replica.
    if (absl::Status s = store_.LockSubmits(); !s.ok()) return s;
    struct Unlock {
      JobStore& store;
      ~Unlock() { store.UnlockSubmits(); }
    } unlock{store_};
    // Again under the locks that cover the insert: a submit that raced this one may have won.
    absl::StatusOr<std::optional<v1::Job>> repeat = find_repeat();
    if (!repeat.ok()) return repeat.status();
    if (*repeat) return **repeat;
    if (absl::Status s = CheckOutputFree(*output); !s.ok()) return s;
    if (max_active_per_owner_ > 0) {
      absl::StatusOr<ActiveJobCounts> active = store_.CountActive(owner);
      if (!active.ok()) return active.status();
      const int64_t count = active->queued + active->running;
      if (count >= static_cast<int64_t>(max_active_per_owner_)) {
        return MakeError(absl::StatusCode::kResourceExhausted, "QUOTA_EXCEEDED",
                         absl::StrCat("'", owner, "' has ", count, " queued or running jobs; at most ",
                                      max_active_per_owner_, " are allowed (--max-queued-per-principal)"),
                         {{"principal", owner}});
      }
    }
    job.set_id(NewJobId());
    job.set_owner(owner);
    job.set_kind(KindOf(spec));
    *job.mutable_spec() = spec;
    job.set_state(v1::JOB_STATE_QUEUED);
    *job.mutable_create_time() = NowTimestamp();
    job.set_request_id(request_id);
    job.set_estimated_peak_bytes(*estimate);
    if (absl::Status s = store_.Insert(job, fingerprint, output->uri); !s.ok()) {
      // The request_id's unique index is the last word, should the lock have been lost.
      if (absl::IsAlreadyExists(s) && !request_id.empty()) {
        absl::StatusOr<std::optional<v1::Job>> winner = find_repeat();
        if (winner.ok() && *winner) return **winner;
      }
      return s;
    }
  }
  LogInfo(job.id(),
          absl::StrCat("queued ", KindName(job.kind()), " job (estimated peak memory ", *estimate, " bytes)"));
  WakeClaimer();
  return job;
}

void JobManager::Execute(const std::shared_ptr<Tracked>& tracked) {
  if (before_start_hook_) before_start_hook_(tracked->job.id());
  JobRun run;
  {
    // One critical section decides whether the job starts: a cancel that took this lock first
    // has already ended it (CANCELLED, persisted), and one that comes later finds it started.
    std::unique_lock lock(tracked->mutex);
    if (tracked->ended) return;
    // While draining nothing new starts: the job goes back for another replica or the next
    // process (Close releases its lease).
    if (draining_) return;
    if (tracked->lease_lost) {  // lost before it started: the replica that took it over runs it
      lock.unlock();
      HandToFeed(tracked);
      return;
    }
    v1::Job& job = tracked->job;
    tracked->started = true;
    job.set_state(v1::JOB_STATE_RUNNING);
    job.set_attempt(job.attempt() + 1);
    *job.mutable_start_time() = NowTimestamp();
    job.clear_end_time();
    job.clear_progress();
    job.clear_error();
    AppendEvent(*tracked, StateEvent(job, absl::StrCat("attempt ", job.attempt(), " started")));
    Persist(*tracked);
    run.job_id = job.id();
    run.attempt = job.attempt();
    run.spec = job.spec();
    run.owner = job.owner();
    run.router = &router_;
    run.io_bytes_per_second = options_.io_bytes_per_second;
  }
  WakeWatchers(*tracked);
  {
    std::lock_guard lock(mutex_);
    ++running_;
  }
  LogInfo(run.job_id, absl::StrCat("running, attempt ", run.attempt, " on ", options_.replica_id));
  Context context(*this, tracked);
  absl::StatusOr<v1::JobResult> result = RunJob(run, context);  // exceptions become statuses
  bool lost = false;
  bool release = false;
  {
    std::lock_guard lock(tracked->mutex);
    v1::Job& job = tracked->job;
    std::string message;
    if (tracked->lease_lost) {
      lost = true;  // another replica runs it now; nothing here may be recorded
    } else if (result.ok()) {
      job.set_state(v1::JOB_STATE_SUCCEEDED);
      *job.mutable_result() = *std::move(result);
      message = "succeeded";
    } else if (tracked->interrupt && absl::IsCancelled(result.status())) {
      job.set_state(v1::JOB_STATE_QUEUED);
      message = "interrupted by shutdown; runs again on another replica or after restart";
      release = true;
    } else if (tracked->cancel && absl::IsCancelled(result.status())) {
      job.set_state(v1::JOB_STATE_CANCELLED);
      *job.mutable_error() = ErrorOf(MakeError(absl::StatusCode::kCancelled, "CANCELLED", "cancelled by request"));
      message = "cancelled";
    } else {
      job.set_state(v1::JOB_STATE_FAILED);
      *job.mutable_error() = ErrorOf(result.status());
      message = absl::StrCat("failed: ", result.status().message());
    }
    if (!lost) {
      if (IsTerminal(job.state())) *job.mutable_end_time() = NowTimestamp();
      AppendEvent(*tracked, StateEvent(job, message));
      // The token is checked in the same statement: a run that lost the job records nothing.
      Persist(*tracked);
      lost = tracked->lease_lost;
      if (job.state() == v1::JOB_STATE_FAILED)
        LogWarn(job.id(), message);
      else
        LogInfo(job.id(), message);
    }
  }
  if (lost) {
    {
      std::lock_guard lock(tracked->mutex);
      tracked->outbox.clear();
    }
    HandToFeed(tracked);  // its watchers here follow the run that took over
  } else {
    WakeWatchers(*tracked);
    if (release) (void)store_.ReleaseLease(run.job_id, tracked->lease_token);
    Finish(tracked);
  }
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

absl::StatusOr<std::shared_ptr<JobWatch>> JobManager::OpenWatch(const std::string& id, std::function<void()> wake) {
  if (std::shared_ptr<Tracked> tracked = Find(id)) return JobWatch::OfLive(tracked, std::move(wake), closed_);
  // Queued, or running on another replica: a view fed from the store. Under the handover lock,
  // so that a claim here either finds the view (and runs the job in it) or came first.
  std::unique_lock handover(handover_mutex_);
  if (std::shared_ptr<Tracked> tracked = Find(id)) return JobWatch::OfLive(tracked, std::move(wake), closed_);
  absl::StatusOr<std::shared_ptr<Tracked>> view = feed_.View(id);
  handover.unlock();
  if (view.ok() && *view != nullptr) return JobWatch::OfLive(*std::move(view), std::move(wake), closed_);
  if (!view.ok() && !absl::IsNotFound(view.status())) return view.status();
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
  if (closed_.exchange(true)) return;
  pool_.SetOnSlotFreed(nullptr);
  {
    std::lock_guard lock(threads_mutex_);
    stopping_ = true;
  }
  threads_changed_.notify_all();
  if (claimer_.joinable()) claimer_.join();
  if (keeper_.joinable()) keeper_.join();
  if (listener_.joinable()) listener_.join();
  feed_.Stop();
  std::vector<std::shared_ptr<Tracked>> live;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, tracked] : tracked_) live.push_back(tracked);
  }
  for (const std::shared_ptr<Tracked>& tracked : live) {
    bool unstarted = false;
    std::string id;
    {
      std::lock_guard job_lock(tracked->mutex);
      unstarted = !tracked->started && !tracked->ended && !tracked->lease_lost;
      id = tracked->job.id();
      tracked->changed.notify_all();
    }
    // Claimed, never started (the pool dropped it): another replica may take it at once.
    if (unstarted) (void)store_.ReleaseLease(id, tracked->lease_token);
    WakeWatchers(*tracked);
  }
  if (claimer_started_) (void)store_.RemoveReplica(options_.replica_id);
}

size_t JobManager::running() const {
  std::lock_guard lock(mutex_);
  return running_;
}

ClusterFigures JobManager::cluster_figures() const {
  std::lock_guard lock(figures_mutex_);
  return figures_;
}

}  // namespace modelsmith
