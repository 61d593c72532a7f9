// SqliteJobStore: the JobStore in one SQLite file (WAL mode), the embedded default for one machine.
//
// Schema (user_version 4):
//   jobs(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, kind INT, state INT,
//        request_id TEXT UNIQUE (NULL when absent), spec_fingerprint TEXT, job BLOB,
//        output_key TEXT (NULL for none), estimated_peak_bytes INT,
//        lease_owner TEXT, lease_token INT, lease_expires_ms INT (NULL: no live lease),
//        owner TEXT, cancel_requested INT)
//   job_events(seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT, event BLOB, created_ms INT)
//   replicas(replica TEXT PRIMARY KEY, heartbeat_ms INT)
// Older databases are migrated on open (2: output_key; 3: the lease columns; 4: owner, cancel
// requests, events, replicas). Lease expiry is
// this machine's clock: one SQLite file is one machine's. One connection behind a mutex (writes
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
  absl::StatusOr<std::optional<ClaimedJob>> ClaimNext(const std::string& replica, double lease_seconds,
                                                      uint64_t max_bytes) override;
  absl::Status RenewLease(const std::string& id, int64_t token, double lease_seconds) override;
  absl::Status UpdateFenced(const v1::Job& job, int64_t token) override;
  absl::Status ReleaseLease(const std::string& id, int64_t token) override;
  absl::StatusOr<std::optional<ClaimedJob>> ClaimById(const std::string& id, const std::string& replica,
                                                      double lease_seconds) override;
  absl::Status ReleaseAllLeases() override;
  absl::Status RequestCancel(const std::string& id) override;
  absl::StatusOr<std::vector<std::string>> ListCancelRequested(const std::string& replica) override;
  absl::Status AppendEvent(const std::string& id, const v1::JobEvent& event) override;
  absl::StatusOr<std::vector<std::pair<int64_t, v1::JobEvent>>> ListEvents(const std::string& id, int64_t after,
                                                                           int limit) override;
  absl::StatusOr<int64_t> LastEventSeq(const std::string& id) override;
  absl::Status PruneEvents(double age_seconds) override;
  absl::Status Heartbeat(const std::string& replica) override;
  absl::Status RemoveReplica(const std::string& replica) override;
  absl::StatusOr<int64_t> CountLiveReplicas(double within_seconds) override;
  absl::StatusOr<ActiveJobCounts> CountActive(const std::string& owner) override;
  // One server per file: its own threads serialise submits; nothing else can.
  absl::Status LockSubmits() override { return absl::OkStatus(); }
  void UnlockSubmits() override {}
  // flock on "<path>.lock", held until the store closes.
  absl::Status ClaimSoleServer() override;

 private:
  SqliteJobStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  absl::StatusOr<std::optional<ClaimedJob>> Claim(const std::string& replica, double lease_seconds, uint64_t max_bytes,
                                                  const std::string& only_id);
  absl::Status Exec(const char* sql);
  absl::StatusOr<int64_t> UserVersion();
  bool HasColumn(const char* table, const char* column);

  std::mutex mutex_;
  sqlite3* db_;
  std::string path_;
  int server_lock_fd_ = -1;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_SQLITE_JOB_STORE_H_
