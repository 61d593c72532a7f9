// JobStore: every job, persisted in SQLite (WAL mode) so that jobs survive a restart.
//
// Schema (user_version 2):
//   jobs(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, kind INT, state INT,
//        request_id TEXT UNIQUE (NULL when absent), spec_fingerprint TEXT, job BLOB,
//        output_key TEXT (the canonical output uri the job holds; NULL for none))
// `job` is the serialized modelsmith.v1.Job; `seq` orders jobs by creation. A job holds its
// output_key while it is QUEUED or RUNNING: the lock lives in the job's row, so it survives a
// restart with the job. Version 1 databases gain the output_key column on open.
// Thread-safe: one connection behind a mutex (writes are few: state changes and throttled
// progress).
#ifndef MODELSMITH_SERVER_JOB_STORE_H_
#define MODELSMITH_SERVER_JOB_STORE_H_

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"

struct sqlite3;

namespace modelsmith {

struct StoredJob {
  int64_t seq = 0;
  v1::Job job;
};

class JobStore {
 public:
  // Opens or creates the database at `path` (its directory must exist).
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  ~JobStore();

  // ALREADY_EXISTS if the id or the request_id is taken. `spec_fingerprint` identifies the spec
  // for request_id comparisons.
  // `output_key` is the canonical output uri the job holds while it is QUEUED or RUNNING.
  absl::Status Insert(const v1::Job& job, const std::string& spec_fingerprint, const std::string& output_key = "");

  // Replaces the stored job with the same id. NOT_FOUND if absent.
  absl::Status Update(const v1::Job& job);

  absl::StatusOr<v1::Job> Get(const std::string& id);

  // The job and its spec fingerprint for `request_id`, if any.
  absl::StatusOr<std::optional<std::pair<v1::Job, std::string>>> FindByRequestId(const std::string& request_id);

  // Newest first, with seq < `before_seq` (0: no bound), filtered by state and kind when they are
  // not UNSPECIFIED, at most `limit` rows.
  absl::StatusOr<std::vector<StoredJob>> List(v1::JobState state, v1::JobKind kind, int64_t before_seq, int limit);

  // The jobs that hold an output now (QUEUED or RUNNING): job id -> output_key.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListHeldOutputs();

  // Oldest first: every job in `state`.
  absl::StatusOr<std::vector<v1::Job>> ListInState(v1::JobState state);

 private:
  explicit JobStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);
  absl::StatusOr<int64_t> UserVersion();
  bool HasColumn(const char* table, const char* column);

  std::mutex mutex_;
  sqlite3* db_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_JOB_STORE_H_
