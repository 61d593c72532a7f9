// JobContext: what a running job may tell the world and ask of it. The server implements it
// over the job store and the watchers; `modelsmith run` implements it over the terminal.
#ifndef MODELSMITH_WORKERS_JOBS_CORE_JOB_CONTEXT_H_
#define MODELSMITH_WORKERS_JOBS_CORE_JOB_CONTEXT_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include <string>
#include <string_view>

#include "modelsmith/v1/job.pb.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

// Everything a job kind needs to run once.
struct JobRun {
  std::string job_id;
  std::string owner;  // the principal that submitted the job (recorded in the manifest)
  uint32_t attempt = 1;
  v1::JobSpec spec;
  const StorageRouter* router = nullptr;
  // Pace of the job's data movement in bytes per second; 0 is unlimited.
  uint64_t io_bytes_per_second = 0;
};

class JobContext {
 public:
  virtual ~JobContext() = default;

  // True once the job should stop (cancelled, or interrupted by shutdown). Jobs poll it between
  // tensors and inside long copies, and then return a CANCELLED status. Thread-safe.
  virtual bool stop_requested() const = 0;

  // The latest progress. Callers may call this often; implementations coalesce. Thread-safe.
  virtual void ReportProgress(const v1::Progress& progress) = 0;

  // A warning event (code UPPER_SNAKE). Thread-safe.
  virtual void Warn(absl::string_view code, absl::string_view message, absl::string_view tensor) = 0;

  // A log line attached to the job (also written to the process log). Thread-safe.
  virtual void Log(absl::string_view message) = 0;

  // OK while this run may still make its output visible. A server with job leases renews the
  // lease here and answers FAILED_PRECONDITION (LEASE_LOST) once another replica has taken the
  // job over. Publication calls it right before its first commit and right before the manifest.
  virtual absl::Status ConfirmStillOwner() const { return absl::OkStatus(); }
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CORE_JOB_CONTEXT_H_
