// PostgresJobStore: the JobStore in PostgreSQL (libpq), the store N replicas share.
//
// Schema migrations are numbered steps recorded in modelsmith_schema(version); Open applies the
// missing ones in one transaction each while holding a session advisory lock, so replicas that
// start together on an empty database apply each step exactly once (the others wait, then find
// nothing to do). Version 1:
//   jobs(seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, kind INT, state INT,
//        request_id TEXT UNIQUE, spec_fingerprint TEXT NOT NULL, job BYTEA NOT NULL, output_key TEXT)
//   jobs_by_state ON jobs(state, seq)
// Version 2: jobs gains estimated_peak_bytes BIGINT, lease_owner TEXT, lease_token BIGINT,
// lease_expires TIMESTAMPTZ (NULL: no live lease; the database's clock); tokens come from the
// sequence lease_tokens, so they only grow. A claim is one UPDATE of the row a
// SELECT ... FOR UPDATE SKIP LOCKED picked: concurrent claimants never share a job.
// Version 3: jobs gains owner TEXT and cancel_requested BOOLEAN; job_events(seq BIGSERIAL,
// job_id, event BYTEA, created TIMESTAMPTZ) carries state changes, warnings and log lines to
// watchers on other replicas; replicas(replica TEXT PRIMARY KEY, heartbeat TIMESTAMPTZ).
// Version 4: triggers NOTIFY modelsmith_changes with 'claimable' (a job inserted, a lease
// released), 'cancel' (a cancel requested) and 'event' (an event appended), so replicas wake at
// once rather than at their next poll.
// A database whose schema is newer than this binary knows is refused (FAILED_PRECONDITION,
// DATABASE_SCHEMA_NEWER) rather than written with an old idea of its rows.
//
// One connection behind a mutex. A statement that finds the connection broken (the server
// restarted, a failover) resets it once and runs again; an insert whose first try may have
// committed is recognised by its id on the retry.
#ifndef MODELSMITH_SERVER_POSTGRES_JOB_STORE_H_
#define MODELSMITH_SERVER_POSTGRES_JOB_STORE_H_

#include <mutex>

#include "server/job_store.h"

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

namespace modelsmith {

inline constexpr int kPostgresSchemaVersion = 4;

class PostgresJobStore final : public JobStore {
 public:
  // `url`: a libpq connection URI (postgresql://...). UNAVAILABLE when it cannot connect.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& url);
  ~PostgresJobStore() override;

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
  // A session advisory lock, polled with pg_try_advisory_lock (UNAVAILABLE, DATABASE_BUSY, after
  // 10 s). A reconnect in between loses it; the request_id's unique index still holds.
  absl::Status LockSubmits() override;
  void UnlockSubmits() override;
  bool shared() const override { return true; }
  // LISTEN modelsmith_changes on a second connection (opened on first use, reopened after a
  // failure); the triggers of schema version 4 NOTIFY it.
  absl::StatusOr<Changes> WaitForChange(std::chrono::milliseconds timeout) override;

 private:
  // A statement's parameters: text, bytea (binary) or NULL.
  struct Param {
    enum class Kind { kText, kBytes, kNull } kind = Kind::kNull;
    std::string value;
  };
  struct Result;  // owns a PGresult

  PostgresJobStore(PGconn* connection, std::string url, std::string redacted_url)
      : connection_(connection), url_(std::move(url)), redacted_url_(std::move(redacted_url)) {}
  absl::Status Migrate();
  // Runs `sql` with `params`; rows come back in binary format. Holds mutex_ (the caller must not).
  absl::StatusOr<Result> Run(const char* what, const char* sql, const std::vector<Param>& params,
                             bool* retried = nullptr);
  absl::StatusOr<Result> RunLocked(const char* what, const char* sql, const std::vector<Param>& params, bool* retried);

  absl::StatusOr<std::optional<ClaimedJob>> Claim(const std::string& replica, double lease_seconds, uint64_t max_bytes,
                                                  const std::string& only_id);

  std::mutex mutex_;
  PGconn* connection_;
  std::string url_;  // with the password: for the listener's connection; never shown
  std::string redacted_url_;
  std::mutex listen_mutex_;
  PGconn* listener_ = nullptr;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_POSTGRES_JOB_STORE_H_
