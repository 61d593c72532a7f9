// SqliteJobStore: the JobStore in one SQLite file (WAL mode), the embedded default for one machine.
//
// Schema (user_version 2):
//   jobs(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, kind INT, state INT,
//        request_id TEXT UNIQUE (NULL when absent), spec_fingerprint TEXT, job BLOB,
//        output_key TEXT (NULL for none))
// Version 1 databases gain the output_key column on open. One connection behind a mutex (writes
// are few: state changes and throttled progress).
#ifndef MODELSMITH_SERVER_SQLITE_JOB_STORE_H_
#define MODELSMITH_SERVER_SQLITE_JOB_STORE_H_

#include <mutex>

#include "server/job_store.h"

struct sqlite3;

namespace modelsmith {

class SqliteJobStore final : public JobStore {
 public:
  // Opens or creates the database at `path` (its directory must exist).
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& path);
  ~SqliteJobStore() override;

  absl::Status Insert(const v1::Job& job, const std::string& spec_fingerprint, const std::string& output_key) override;
  absl::Status Update(const v1::Job& job) override;
  absl::StatusOr<v1::Job> Get(const std::string& id) override;
  absl::StatusOr<std::optional<std::pair<v1::Job, std::string>>> FindByRequestId(
      const std::string& request_id) override;
  absl::StatusOr<std::vector<StoredJob>> List(v1::JobState state, v1::JobKind kind, int64_t before_seq,
                                              int limit) override;
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListHeldOutputs() override;
  absl::StatusOr<std::vector<v1::Job>> ListInState(v1::JobState state) override;

 private:
  explicit SqliteJobStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const char* sql);
  absl::StatusOr<int64_t> UserVersion();
  bool HasColumn(const char* table, const char* column);

  std::mutex mutex_;
  sqlite3* db_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_SQLITE_JOB_STORE_H_
