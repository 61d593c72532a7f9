// JobStore: every job, persisted so that jobs survive a restart, behind one interface with two
// implementations chosen by the database URL:
//   sqlite:PATH (or a plain path)     SqliteJobStore: one machine, the embedded default
//   postgresql://USER:PASSWORD@HOST:PORT/DB?sslmode=...  (or postgres://)
//                                     PostgresJobStore: the store N replicas share
// Both keep the same rows: seq (creation order), id, kind, state, request_id (unique when
// present), spec_fingerprint, the serialized modelsmith.v1.Job, and output_key (the canonical
// output uri a QUEUED or RUNNING job holds, so the hold survives a restart with the job). Both
// apply versioned schema migrations at open. tests/unit/job_store_test.cc is the contract: it runs
// every case against both.
//
// Errors never carry a password: URLs are shown through RedactDatabaseUrl.
// Thread-safe.
#ifndef MODELSMITH_SERVER_JOB_STORE_H_
#define MODELSMITH_SERVER_JOB_STORE_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"

namespace modelsmith {

struct StoredJob {
  int64_t seq = 0;
  v1::Job job;
};

// A job a replica claimed: the job as stored and the lease's fencing token. Tokens only grow
// (across the whole store), so a write with a token older than the job's is a write by a replica
// that lost the job.
struct ClaimedJob {
  v1::Job job;
  int64_t token = 0;
  bool cancel_requested = false;  // a replica asked for the job's cancellation (RequestCancel)
};

// Jobs that have not ended.
struct ActiveJobCounts {
  int64_t queued = 0;
  int64_t running = 0;
};

class JobStore {
 public:
  // Opens (creating and migrating as needed) the store `url` names. INVALID_ARGUMENT
  // (DATABASE_URL_INVALID) for a URL of another scheme; UNAVAILABLE when it cannot be reached.
  static absl::StatusOr<std::unique_ptr<JobStore>> Open(const std::string& url);
  virtual ~JobStore() = default;

  // ALREADY_EXISTS if the id or the request_id is taken. `spec_fingerprint` identifies the spec
  // for request_id comparisons. `output_key` is the canonical output uri the job holds while it is
  // QUEUED or RUNNING.
  virtual absl::Status Insert(const v1::Job& job, const std::string& spec_fingerprint,
                              const std::string& output_key = "") = 0;

  // Replaces the stored job with the same id. NOT_FOUND if absent.
  virtual absl::Status Update(const v1::Job& job) = 0;

  virtual absl::StatusOr<v1::Job> Get(const std::string& id) = 0;

  // The job and its spec fingerprint for `request_id`, if any.
  virtual absl::StatusOr<std::optional<std::pair<v1::Job, std::string>>> FindByRequestId(
      const std::string& request_id) = 0;

  // Newest first, with seq < `before_seq` (0: no bound), filtered by state and kind when they are
  // not UNSPECIFIED, at most `limit` rows.
  virtual absl::StatusOr<std::vector<StoredJob>> List(v1::JobState state, v1::JobKind kind, int64_t before_seq,
                                                      int limit) = 0;

  // The jobs that hold an output now (QUEUED or RUNNING): job id -> output_key.
  virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListHeldOutputs() = 0;

  // Oldest first: every job in `state`.
  virtual absl::StatusOr<std::vector<v1::Job>> ListInState(v1::JobState state) = 0;

  // ---- Leases (the claim protocol of N replicas; DESIGN: a job's way through the service) ----
  // A job is claimable when it is QUEUED or RUNNING, its estimated_peak_bytes fit `max_bytes`, and
  // it has no live lease (none taken, released, or expired). A RUNNING one is a job whose replica
  // died or stalled: the claimant runs it again as the next attempt. The lease's expiry is
  // measured by the store's own clock (PostgreSQL's, for every replica alike).
  //
  // Claims the oldest claimable job for `replica` for `lease_seconds`, with a new token; nullopt
  // when none is claimable. Concurrent claimants never get the same job.
  virtual absl::StatusOr<std::optional<ClaimedJob>> ClaimNext(const std::string& replica, double lease_seconds,
                                                              uint64_t max_bytes) = 0;
  // Extends the lease of `token` by `lease_seconds` from now. FAILED_PRECONDITION (LEASE_LOST)
  // when the job's token is no longer `token` (another replica claimed it).
  virtual absl::Status RenewLease(const std::string& id, int64_t token, double lease_seconds) = 0;
  // Update, only while `token` is the job's current token, checked in the same statement:
  // FAILED_PRECONDITION (LEASE_LOST) otherwise, NOT_FOUND when there is no such job.
  virtual absl::Status UpdateFenced(const v1::Job& job, int64_t token) = 0;
  // Ends the lease of `token` now (a replica handing a job back), so the job is claimable at
  // once. LEASE_LOST as above.
  virtual absl::Status ReleaseLease(const std::string& id, int64_t token) = 0;

  // Claims job `id` the same way when it is claimable, whatever its size; nullopt when it is not
  // (it ended, or a live lease holds it). A replica cancelling a queued job it does not run.
  virtual absl::StatusOr<std::optional<ClaimedJob>> ClaimById(const std::string& id, const std::string& replica,
                                                              double lease_seconds) = 0;
  // Ends every lease now. Only for a store one server owns (SQLite), at that server's start: the
  // leases are its previous process's.
  virtual absl::Status ReleaseAllLeases() = 0;

  // ---- Cancellation across replicas ----
  // Asks the replica that holds job `id` to cancel it (it polls ListCancelRequested); a replica
  // that claims it later cancels it instead of running it. NOT_FOUND if there is no such job.
  virtual absl::Status RequestCancel(const std::string& id) = 0;
  // The ids of the jobs leased by `replica` whose cancellation was requested.
  virtual absl::StatusOr<std::vector<std::string>> ListCancelRequested(const std::string& replica) = 0;

  // ---- Events, for watchers on other replicas ----
  // State changes, warnings and log lines of a job, in the order appended, numbered by a
  // store-wide sequence. Progress is not an event here: it lives in the stored job.
  virtual absl::Status AppendEvent(const std::string& id, const v1::JobEvent& event) = 0;
  // The events of job `id` numbered above `after`, oldest first, at most `limit`.
  virtual absl::StatusOr<std::vector<std::pair<int64_t, v1::JobEvent>>> ListEvents(const std::string& id, int64_t after,
                                                                                   int limit) = 0;
  // The number of job `id`'s latest event (0: none).
  virtual absl::StatusOr<int64_t> LastEventSeq(const std::string& id) = 0;
  // Deletes the events of ended jobs older than `age_seconds` (a late watcher of an ended job is
  // served the stored job, warnings and all).
  virtual absl::Status PruneEvents(double age_seconds) = 0;

  // ---- Replicas ----
  // Records that `replica` is alive now (the store's clock).
  virtual absl::Status Heartbeat(const std::string& replica) = 0;
  // Forgets `replica` (it is stopping).
  virtual absl::Status RemoveReplica(const std::string& replica) = 0;
  // Replicas whose latest heartbeat is at most `within_seconds` old.
  virtual absl::StatusOr<int64_t> CountLiveReplicas(double within_seconds) = 0;

  // QUEUED and RUNNING jobs in the whole store, of `owner` only when it is not empty.
  virtual absl::StatusOr<ActiveJobCounts> CountActive(const std::string& owner) = 0;

  // Serialises submits across every server on the store (the request_id lookup, the output
  // hold check and the insert), until UnlockSubmits. Callers serialise their own threads first.
  virtual absl::Status LockSubmits() = 0;
  virtual void UnlockSubmits() = 0;

  // True when several servers may share this store (PostgreSQL): then each job's events and
  // progress are written for watchers on other replicas, and WaitForChange wakes replicas.
  virtual bool shared() const { return false; }

  // What another server changed, as told by WaitForChange.
  struct Changes {
    bool claimable = false;  // a job was queued or a lease released: there may be work to claim
    bool cancel = false;     // a cancel was requested
    bool event = false;      // a job event was appended
  };
  // Waits at most `timeout` for another server's change (PostgreSQL: LISTEN on a connection of its
  // own, NOTIFY from triggers). Only for a shared store; others answer UNIMPLEMENTED at once.
  // UNAVAILABLE (after waiting `timeout`) when the database cannot be reached.
  virtual absl::StatusOr<Changes> WaitForChange(std::chrono::milliseconds timeout) {
    (void)timeout;
    return absl::UnimplementedError("this job store has one server; nothing else changes it");
  }

  // Makes this process the only server on the store for as long as it runs: SQLite's file is one
  // machine's and one server's (its leases are released at start). FAILED_PRECONDITION
  // (DATABASE_IN_USE) when another process serves it. PostgreSQL: any number of replicas.
  virtual absl::Status ClaimSoleServer() { return absl::OkStatus(); }
};

// FAILED_PRECONDITION (LEASE_LOST, naming the job): a fenced write by a replica whose token is no
// longer the job's.
absl::Status LeaseLostError(const std::string& id);

// `url` with any password replaced by "***", for logs and errors.
std::string RedactDatabaseUrl(const std::string& url);

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_JOB_STORE_H_
