#include "server/postgres_job_store.h"

#include <endian.h>
#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

// pg_advisory_lock keys all servers share: schema migrations ("msmith" in ASCII) and submits
// ("mssubm").
constexpr int64_t kMigrationLock = 0x6d736d697468;
constexpr int64_t kSubmitLock = 0x6d737375626d;

// Each step brings the schema from version i to i + 1; append, never edit.
constexpr const char* kMigrations[] = {
    // 1: the jobs table.
    "CREATE TABLE jobs ("
    "  seq BIGSERIAL PRIMARY KEY,"
    "  id TEXT NOT NULL UNIQUE,"
    "  kind INTEGER NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  request_id TEXT UNIQUE,"
    "  spec_fingerprint TEXT NOT NULL,"
    "  job BYTEA NOT NULL,"
    "  output_key TEXT);"
    "CREATE INDEX jobs_by_state ON jobs(state, seq);",
    // 2: leases. Expiry by the database's clock, the one clock every replica shares.
    "ALTER TABLE jobs ADD COLUMN estimated_peak_bytes BIGINT NOT NULL DEFAULT 0,"
    "  ADD COLUMN lease_owner TEXT,"
    "  ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0,"
    "  ADD COLUMN lease_expires TIMESTAMPTZ;"
    "CREATE SEQUENCE lease_tokens;",
    // 3: what replicas share beyond the queue: owners (quotas), cancel requests, events for
    // watchers on other replicas, heartbeats.
    "ALTER TABLE jobs ADD COLUMN owner TEXT,"
    "  ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;"
    "CREATE INDEX jobs_by_lease_owner ON jobs(lease_owner) WHERE lease_owner IS NOT NULL;"
    "CREATE TABLE job_events ("
    "  seq BIGSERIAL PRIMARY KEY,"
    "  job_id TEXT NOT NULL,"
    "  event BYTEA NOT NULL,"
    "  created TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());"
    "CREATE INDEX job_events_by_job ON job_events(job_id, seq);"
    "CREATE TABLE replicas (replica TEXT PRIMARY KEY, heartbeat TIMESTAMPTZ NOT NULL);",
    // 4: wake-ups. Row triggers with conditions, so progress writes (a few a second per running
    // job) wake nobody; NOTIFY is delivered at commit, once per distinct payload.
    "CREATE FUNCTION modelsmith_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN PERFORM pg_notify('modelsmith_changes', TG_ARGV[0]); RETURN NULL; END $$;"
    "CREATE TRIGGER jobs_queued AFTER INSERT ON jobs FOR EACH ROW "
    "  EXECUTE FUNCTION modelsmith_notify('claimable');"
    "CREATE TRIGGER jobs_released AFTER UPDATE ON jobs FOR EACH ROW "
    "  WHEN (OLD.lease_expires IS NOT NULL AND NEW.lease_expires IS NULL) "
    "  EXECUTE FUNCTION modelsmith_notify('claimable');"
    "CREATE TRIGGER jobs_cancel AFTER UPDATE ON jobs FOR EACH ROW "
    "  WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested) "
    "  EXECUTE FUNCTION modelsmith_notify('cancel');"
    "CREATE TRIGGER job_events_appended AFTER INSERT ON job_events FOR EACH ROW "
    "  EXECUTE FUNCTION modelsmith_notify('event');",
};
static_assert(std::size(kMigrations) == kPostgresSchemaVersion);

constexpr char kUniqueViolation[] = "23505";

}  // namespace

// A PGresult that clears itself; rows are in binary format.
struct PostgresJobStore::Result {
  explicit Result(PGresult* r) : result(r) {}
  Result(Result&& other) noexcept : result(std::exchange(other.result, nullptr)) {}
  Result& operator=(Result&&) = delete;
  ~Result() { PQclear(result); }

  int rows() const { return PQntuples(result); }
  bool IsNull(int row, int column) const { return PQgetisnull(result, row, column) != 0; }
  std::string Bytes(int row, int column) const {
    return std::string(PQgetvalue(result, row, column), static_cast<size_t>(PQgetlength(result, row, column)));
  }
  bool Bool(int row, int column) const { return *PQgetvalue(result, row, column) != 0; }
  int64_t Int64(int row, int column) const {
    uint64_t big_endian = 0;
    std::memcpy(&big_endian, PQgetvalue(result, row, column), sizeof big_endian);
    return static_cast<int64_t>(be64toh(big_endian));
  }
  absl::StatusOr<v1::Job> Job(int row, int column) const {
    v1::Job job;
    if (!job.ParseFromArray(PQgetvalue(result, row, column), PQgetlength(result, row, column))) {
      return absl::DataLossError("job database: a stored job does not parse");
    }
    return job;
  }

  PGresult* result;
};

absl::StatusOr<std::unique_ptr<JobStore>> PostgresJobStore::Open(const std::string& url) {
  const std::string redacted = RedactDatabaseUrl(url);
  PGconn* connection = PQconnectdb(url.c_str());
  if (connection == nullptr || PQstatus(connection) != CONNECTION_OK) {
    // libpq's message names the host and the reason (never the password).
    std::string why = connection ? PQerrorMessage(connection) : "out of memory";
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    PQfinish(connection);
    return MakeError(absl::StatusCode::kUnavailable, "DATABASE_UNAVAILABLE",
                     absl::StrCat("cannot connect to the job database '", redacted, "': ", why),
                     {{"database", redacted}});
  }
  std::unique_ptr<PostgresJobStore> store(new PostgresJobStore(connection, url, redacted));
  if (absl::Status s = store->Migrate(); !s.ok()) return s;
  return store;
}

PostgresJobStore::~PostgresJobStore() {
  PQfinish(connection_);
  if (listener_ != nullptr) PQfinish(listener_);
}

absl::StatusOr<JobStore::Changes> PostgresJobStore::WaitForChange(std::chrono::milliseconds timeout) {
  std::lock_guard guard(listen_mutex_);
  if (listener_ == nullptr || PQstatus(listener_) != CONNECTION_OK) {
    if (listener_ != nullptr) PQfinish(listener_);
    listener_ = PQconnectdb(url_.c_str());
    Result listen(PQstatus(listener_) == CONNECTION_OK ? PQexec(listener_, "LISTEN modelsmith_changes") : nullptr);
    if (PQresultStatus(listen.result) != PGRES_COMMAND_OK) {
      std::string why = PQerrorMessage(listener_);
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      PQfinish(listener_);
      listener_ = nullptr;
      std::this_thread::sleep_for(timeout);
      return MakeError(absl::StatusCode::kUnavailable, "DATABASE_UNAVAILABLE",
                       absl::StrCat("job database '", redacted_url_, "': listen for changes: ", why),
                       {{"database", redacted_url_}});
    }
  }
  Changes changes;
  bool any = false;
  auto drain = [&] {
    while (PGnotify* notify = PQnotifies(listener_)) {
      const std::string_view what = notify->extra;
      changes.claimable |= what == "claimable";
      changes.cancel |= what == "cancel";
      changes.event |= what == "event";
      any = true;
      PQfreemem(notify);
    }
  };
  PQconsumeInput(listener_);
  drain();
  if (!any) {
    pollfd socket{PQsocket(listener_), POLLIN, 0};
    if (poll(&socket, 1, static_cast<int>(timeout.count())) > 0 && PQconsumeInput(listener_) == 1) drain();
  }
  return changes;
}

absl::Status PostgresJobStore::Migrate() {
  const std::string lock = absl::StrCat(kMigrationLock);
  if (absl::StatusOr<Result> r =
          Run("lock the schema", "SELECT pg_advisory_lock($1::bigint)", {{Param::Kind::kText, lock}});
      !r.ok()) {
    return r.status();
  }
  absl::Status outcome = [&]() -> absl::Status {
    if (absl::StatusOr<Result> r = Run("create the schema table",
                                       "CREATE TABLE IF NOT EXISTS modelsmith_schema(version INTEGER NOT NULL)", {});
        !r.ok()) {
      return r.status();
    }
    absl::StatusOr<Result> current =
        Run("read the schema version", "SELECT COALESCE(MAX(version), 0)::bigint FROM modelsmith_schema", {});
    if (!current.ok()) return current.status();
    const int64_t version = current->Int64(0, 0);
    if (version > kPostgresSchemaVersion) {
      return MakeError(absl::StatusCode::kFailedPrecondition, "DATABASE_SCHEMA_NEWER",
                       absl::StrCat("the job database '", redacted_url_, "' has schema version ", version,
                                    "; this modelsmithd knows up to ", kPostgresSchemaVersion, " (upgrade it)"),
                       {{"database", redacted_url_}});
    }
    for (int64_t next = version + 1; next <= kPostgresSchemaVersion; ++next) {
      const std::string step = absl::StrCat("BEGIN;", kMigrations[next - 1],
                                            "INSERT INTO modelsmith_schema(version) VALUES (", next, ");COMMIT;");
      std::lock_guard guard(mutex_);
      Result r(PQexec(connection_, step.c_str()));
      if (PQresultStatus(r.result) != PGRES_COMMAND_OK) {
        const std::string why = PQresultErrorMessage(r.result);
        Result rollback(PQexec(connection_, "ROLLBACK"));
        return absl::InternalError(absl::StrCat("job database: schema migration ", next, ": ", why));
      }
    }
    return absl::OkStatus();
  }();
  (void)Run("unlock the schema", "SELECT pg_advisory_unlock($1::bigint)", {{Param::Kind::kText, lock}});
  return outcome;
}

absl::StatusOr<PostgresJobStore::Result> PostgresJobStore::Run(const char* what, const char* sql,
                                                               const std::vector<Param>& params, bool* retried) {
  std::lock_guard guard(mutex_);
  return RunLocked(what, sql, params, retried);
}

absl::StatusOr<PostgresJobStore::Result> PostgresJobStore::RunLocked(const char* what, const char* sql,
                                                                     const std::vector<Param>& params, bool* retried) {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (const Param& p : params) {
    values.push_back(p.kind == Param::Kind::kNull ? nullptr : p.value.data());
    lengths.push_back(static_cast<int>(p.value.size()));
    formats.push_back(p.kind == Param::Kind::kBytes ? 1 : 0);
  }
  for (int attempt = 0;; ++attempt) {
    Result result(PQexecParams(connection_, sql, static_cast<int>(params.size()), nullptr, values.data(),
                               lengths.data(), formats.data(), /*resultFormat=*/1));
    const ExecStatusType status = PQresultStatus(result.result);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
    if (PQstatus(connection_) == CONNECTION_BAD && attempt == 0) {
      PQreset(connection_);  // the server restarted or failed over: one new connection, one more try
      if (retried != nullptr) *retried = true;
      continue;
    }
    const char* state = PQresultErrorField(result.result, PG_DIAG_SQLSTATE);
    std::string why = PQresultErrorMessage(result.result);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    if (state != nullptr && std::strcmp(state, kUniqueViolation) == 0) {
      return absl::AlreadyExistsError("a job with this id or request_id exists");
    }
    if (PQstatus(connection_) == CONNECTION_BAD) {
      return MakeError(absl::StatusCode::kUnavailable, "DATABASE_UNAVAILABLE",
                       absl::StrCat("job database '", redacted_url_, "': ", what, ": ", why),
                       {{"database", redacted_url_}});
    }
    return absl::InternalError(absl::StrCat("job database: ", what, ": ", why));
  }
}

absl::StatusOr<std::optional<ClaimedJob>> PostgresJobStore::ClaimNext(const std::string& replica, double lease_seconds,
                                                                      uint64_t max_bytes) {
  return Claim(replica, lease_seconds, max_bytes, "");
}

absl::StatusOr<std::optional<ClaimedJob>> PostgresJobStore::ClaimById(const std::string& id, const std::string& replica,
                                                                      double lease_seconds) {
  return Claim(replica, lease_seconds, UINT64_MAX, id);
}

absl::StatusOr<std::optional<ClaimedJob>> PostgresJobStore::Claim(const std::string& replica, double lease_seconds,
                                                                  uint64_t max_bytes, const std::string& only_id) {
  // SKIP LOCKED: a row another replica is claiming right now is passed over, not waited for.
  absl::StatusOr<Result> r =
      Run("claim",
          "UPDATE jobs SET lease_owner = $1, lease_token = nextval('lease_tokens'), "
          "  lease_expires = clock_timestamp() + make_interval(secs => $2::float8) "
          "WHERE seq = (SELECT seq FROM jobs WHERE state IN ($3::int, $4::int) AND estimated_peak_bytes <= $5::bigint "
          "  AND (lease_expires IS NULL OR lease_expires < clock_timestamp()) AND ($6 = '' OR id = $6) "
          "  ORDER BY seq ASC LIMIT 1 FOR UPDATE SKIP LOCKED) "
          "RETURNING job, lease_token, cancel_requested",
          {{Param::Kind::kText, replica},
           {Param::Kind::kText, absl::StrCat(lease_seconds)},
           {Param::Kind::kText, absl::StrCat(static_cast<int>(v1::JOB_STATE_QUEUED))},
           {Param::Kind::kText, absl::StrCat(static_cast<int>(v1::JOB_STATE_RUNNING))},
           {Param::Kind::kText, absl::StrCat(std::min<uint64_t>(max_bytes, INT64_MAX))},
           {Param::Kind::kText, only_id}});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return std::nullopt;
  absl::StatusOr<v1::Job> job = r->Job(0, 0);
  if (!job.ok()) return job.status();
  return ClaimedJob{*std::move(job), r->Int64(0, 1), r->Bool(0, 2)};
}

absl::Status PostgresJobStore::ReleaseAllLeases() {
  absl::StatusOr<Result> r = Run("release all",
                                 "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL "
                                 "WHERE lease_expires IS NOT NULL",
                                 {});
  return r.status();
}

absl::Status PostgresJobStore::RequestCancel(const std::string& id) {
  absl::StatusOr<Result> r =
      Run("cancel", "UPDATE jobs SET cancel_requested = TRUE WHERE id = $1", {{Param::Kind::kText, id}});
  if (!r.ok()) return r.status();
  if (std::strcmp(PQcmdTuples(r->result), "0") == 0) {
    return absl::NotFoundError(absl::StrCat("job '", id, "' not found"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> PostgresJobStore::ListCancelRequested(const std::string& replica) {
  absl::StatusOr<Result> r =
      Run("cancel requests",
          "SELECT id FROM jobs WHERE lease_owner = $1 AND cancel_requested AND state IN ($2::int, $3::int)",
          {{Param::Kind::kText, replica},
           {Param::Kind::kText, absl::StrCat(static_cast<int>(v1::JOB_STATE_QUEUED))},
           {Param::Kind::kText, absl::StrCat(static_cast<int>(v1::JOB_STATE_RUNNING))}});
  if (!r.ok()) return r.status();
  std::vector<std::string> ids;
  for (int i = 0; i < r->rows(); ++i) ids.push_back(r->Bytes(i, 0));
  return ids;
}

absl::Status PostgresJobStore::AppendEvent(const std::string& id, const v1::JobEvent& event) {
  return Run("event", "INSERT INTO job_events(job_id, event) VALUES ($1, $2)",
             {{Param::Kind::kText, id}, {Param::Kind::kBytes, event.SerializeAsString()}})
      .status();
}

absl::StatusOr<std::vector<std::pair<int64_t, v1::JobEvent>>> PostgresJobStore::ListEvents(const std::string& id,
                                                                                           int64_t after, int limit) {
  absl::StatusOr<Result> r = Run(
      "events",
      "SELECT seq, event FROM job_events WHERE job_id = $1 AND seq > $2::bigint ORDER BY seq ASC "
      "LIMIT $3::bigint",
      {{Param::Kind::kText, id}, {Param::Kind::kText, absl::StrCat(after)}, {Param::Kind::kText, absl::StrCat(limit)}});
  if (!r.ok()) return r.status();
  std::vector<std::pair<int64_t, v1::JobEvent>> events;
  for (int i = 0; i < r->rows(); ++i) {
    v1::JobEvent event;
    if (!event.ParseFromArray(PQgetvalue(r->result, i, 1), PQgetlength(r->result, i, 1))) {
      return absl::DataLossError("job database: a stored event does not parse");
    }
    events.emplace_back(r->Int64(i, 0), std::move(event));
  }
  return events;
}

absl::StatusOr<int64_t> PostgresJobStore::LastEventSeq(const std::string& id) {
  absl::StatusOr<Result> r = Run("events", "SELECT COALESCE(MAX(seq), 0)::bigint FROM job_events WHERE job_id = $1",
                                 {{Param::Kind::kText, id}});
  if (!r.ok()) return r.status();
  return r->Int64(0, 0);
}

absl::Status PostgresJobStore::PruneEvents(double age_seconds) {
  return Run("prune events",
             "DELETE FROM job_events WHERE created < clock_timestamp() - make_interval(secs => $1::float8) "
             "AND job_id IN (SELECT id FROM jobs WHERE state NOT IN ($2::int, $3::int))",
             {{Param::Kind::kText, absl::StrCat(age_seconds)},
              {Param::Kind::kText, absl::StrCat(static_cast<int>(v1::JOB_STATE_QUEUED))},
              {Param::Kind::kText, absl::StrCat(static_cast<int>(v1::JOB_STATE_RUNNING))}})
      .status();
}

absl::Status PostgresJobStore::Heartbeat(const std::string& replica) {
  return Run("heartbeat",
             "INSERT INTO replicas(replica, heartbeat) VALUES ($1, clock_timestamp()) "
             "ON CONFLICT (replica) DO UPDATE SET heartbeat = EXCLUDED.heartbeat",
             {{Param::Kind::kText, replica}})
      .status();
}

absl::Status PostgresJobStore::RemoveReplica(const std::string& replica) {
  return Run("remove replica", "DELETE FROM replicas WHERE replica = $1", {{Param::Kind::kText, replica}}).status();
}

absl::StatusOr<int64_t> PostgresJobStore::CountLiveReplicas(double within_seconds) {
  absl::StatusOr<Result> r =
      Run("replicas",
          "SELECT COUNT(*)::bigint FROM replicas WHERE heartbeat >= clock_timestamp() - make_interval(secs => "
          "$1::float8)",
          {{Param::Kind::kText, absl::StrCat(within_seconds)}});
  if (!r.ok()) return r.status();
  return r->Int64(0, 0);
}

absl::StatusOr<ActiveJobCounts> PostgresJobStore::CountActive(const std::string& owner) {
  absl::StatusOr<Result> r =
      Run("count",
          "SELECT COUNT(*) FILTER (WHERE state = $1::int)::bigint, COUNT(*) FILTER (WHERE state = $2::int)::bigint "
          "FROM jobs WHERE state IN ($1::int, $2::int) AND ($3 = '' OR owner = $3)",
          {{Param::Kind::kText, absl::StrCat(static_cast<int>(v1::JOB_STATE_QUEUED))},
           {Param::Kind::kText, absl::StrCat(static_cast<int>(v1::JOB_STATE_RUNNING))},
           {Param::Kind::kText, owner}});
  if (!r.ok()) return r.status();
  return ActiveJobCounts{r->Int64(0, 0), r->Int64(0, 1)};
}

absl::Status PostgresJobStore::LockSubmits() {
  // Polled, not waited for inside the database: a blocking pg_advisory_lock would hold the one
  // connection, and with it this replica's lease renewals, while another replica submits.
  const std::string key = absl::StrCat(kSubmitLock);
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<Result> r =
        Run("lock submits", "SELECT pg_try_advisory_lock($1::bigint)", {{Param::Kind::kText, key}});
    if (!r.ok()) return r.status();
    if (r->Bool(0, 0)) return absl::OkStatus();
    if (attempt == 2000) {  // 10 s: a replica holds it no longer than a few statements
      return MakeError(absl::StatusCode::kUnavailable, "DATABASE_BUSY",
                       "job database: another replica has held the submit lock for 10 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void PostgresJobStore::UnlockSubmits() {
  (void)Run("unlock submits", "SELECT pg_advisory_unlock($1::bigint)",
            {{Param::Kind::kText, absl::StrCat(kSubmitLock)}});
}

absl::Status PostgresJobStore::RenewLease(const std::string& id, int64_t token, double lease_seconds) {
  absl::StatusOr<Result> r =
      Run("renew",
          "UPDATE jobs SET lease_expires = clock_timestamp() + make_interval(secs => $1::float8) "
          "WHERE id = $2 AND lease_token = $3::bigint",
          {{Param::Kind::kText, absl::StrCat(lease_seconds)},
           {Param::Kind::kText, id},
           {Param::Kind::kText, absl::StrCat(token)}});
  if (!r.ok()) return r.status();
  return std::strcmp(PQcmdTuples(r->result), "1") == 0 ? absl::OkStatus() : LeaseLostError(id);
}

absl::Status PostgresJobStore::UpdateFenced(const v1::Job& job, int64_t token) {
  absl::StatusOr<Result> r =
      Run("update", "UPDATE jobs SET state = $1, job = $2 WHERE id = $3 AND lease_token = $4::bigint",
          {{Param::Kind::kText, absl::StrCat(static_cast<int>(job.state()))},
           {Param::Kind::kBytes, job.SerializeAsString()},
           {Param::Kind::kText, job.id()},
           {Param::Kind::kText, absl::StrCat(token)}});
  if (!r.ok()) return r.status();
  if (std::strcmp(PQcmdTuples(r->result), "1") == 0) return absl::OkStatus();
  absl::StatusOr<Result> exists = Run("update", "SELECT 1 FROM jobs WHERE id = $1", {{Param::Kind::kText, job.id()}});
  if (!exists.ok()) return exists.status();
  if (exists->rows() == 1) return LeaseLostError(job.id());
  return absl::NotFoundError(absl::StrCat("job '", job.id(), "' not found"));
}

absl::Status PostgresJobStore::ReleaseLease(const std::string& id, int64_t token) {
  absl::StatusOr<Result> r = Run("release",
                                 "UPDATE jobs SET lease_owner = NULL, lease_expires = NULL "
                                 "WHERE id = $1 AND lease_token = $2::bigint",
                                 {{Param::Kind::kText, id}, {Param::Kind::kText, absl::StrCat(token)}});
  if (!r.ok()) return r.status();
  return std::strcmp(PQcmdTuples(r->result), "1") == 0 ? absl::OkStatus() : LeaseLostError(id);
}

absl::Status PostgresJobStore::Insert(const v1::Job& job, const std::string& spec_fingerprint,
                                      const std::string& output_key) {
  const std::string bytes = job.SerializeAsString();
  std::vector<Param> params = {
      {Param::Kind::kText, job.id()},
      {Param::Kind::kText, absl::StrCat(static_cast<int>(job.kind()))},
      {Param::Kind::kText, absl::StrCat(static_cast<int>(job.state()))},
      job.request_id().empty() ? Param{} : Param{Param::Kind::kText, job.request_id()},
      {Param::Kind::kText, spec_fingerprint},
      {Param::Kind::kBytes, bytes},
      output_key.empty() ? Param{} : Param{Param::Kind::kText, output_key},
      {Param::Kind::kText, absl::StrCat(job.estimated_peak_bytes())},
      {Param::Kind::kText, job.owner()},
  };
  bool retried = false;
  absl::StatusOr<Result> r = Run("insert",
                                 "INSERT INTO jobs(id, kind, state, request_id, spec_fingerprint, job, output_key, "
                                 "estimated_peak_bytes, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::bigint, $9)",
                                 params, &retried);
  if (absl::IsAlreadyExists(r.status()) && retried) {
    // The first try may have committed before the connection broke: then the row is ours.
    absl::StatusOr<Result> mine = Run("insert check", "SELECT job FROM jobs WHERE id = $1", {params[0]});
    if (mine.ok() && mine->rows() == 1 && mine->Bytes(0, 0) == bytes) return absl::OkStatus();
  }
  return r.status();
}

absl::Status PostgresJobStore::Update(const v1::Job& job) {
  absl::StatusOr<Result> r = Run("update", "UPDATE jobs SET state = $1, job = $2 WHERE id = $3",
                                 {{Param::Kind::kText, absl::StrCat(static_cast<int>(job.state()))},
                                  {Param::Kind::kBytes, job.SerializeAsString()},
                                  {Param::Kind::kText, job.id()}});
  if (!r.ok()) return r.status();
  if (std::strcmp(PQcmdTuples(r->result), "0") == 0) {
    return absl::NotFoundError(absl::StrCat("job '", job.id(), "' not found"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> PostgresJobStore::Get(const std::string& id) {
  absl::StatusOr<Result> r = Run("get", "SELECT job FROM jobs WHERE id = $1", {{Param::Kind::kText, id}});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError(absl::StrCat("job '", id, "' not found"));
  return r->Job(0, 0);
}

absl::StatusOr<std::optional<std::pair<v1::Job, std::string>>> PostgresJobStore::FindByRequestId(
    const std::string& request_id) {
  absl::StatusOr<Result> r =
      Run("find", "SELECT job, spec_fingerprint FROM jobs WHERE request_id = $1", {{Param::Kind::kText, request_id}});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return std::nullopt;
  absl::StatusOr<v1::Job> job = r->Job(0, 0);
  if (!job.ok()) return job.status();
  return std::make_pair(*std::move(job), r->Bytes(0, 1));
}

absl::StatusOr<std::vector<StoredJob>> PostgresJobStore::List(v1::JobState state, v1::JobKind kind, int64_t before_seq,
                                                              int limit) {
  absl::StatusOr<Result> r =
      Run("list",
          "SELECT seq, job FROM jobs WHERE ($1::int = 0 OR state = $1::int) AND ($2::int = 0 OR kind = $2::int) "
          "AND ($3::bigint = 0 OR seq < $3::bigint) ORDER BY seq DESC LIMIT $4::bigint",
          {{Param::Kind::kText, absl::StrCat(static_cast<int>(state))},
           {Param::Kind::kText, absl::StrCat(static_cast<int>(kind))},
           {Param::Kind::kText, absl::StrCat(before_seq)},
           {Param::Kind::kText, absl::StrCat(limit)}});
  if (!r.ok()) return r.status();
  std::vector<StoredJob> rows;
  for (int i = 0; i < r->rows(); ++i) {
    absl::StatusOr<v1::Job> job = r->Job(i, 1);
    if (!job.ok()) return job.status();
    rows.push_back({r->Int64(i, 0), *std::move(job)});
  }
  return rows;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> PostgresJobStore::ListHeldOutputs() {
  absl::StatusOr<Result> r = Run(
      "held outputs", "SELECT id, output_key FROM jobs WHERE state IN ($1::int, $2::int) AND output_key IS NOT NULL",
      {{Param::Kind::kText, absl::StrCat(static_cast<int>(v1::JOB_STATE_QUEUED))},
       {Param::Kind::kText, absl::StrCat(static_cast<int>(v1::JOB_STATE_RUNNING))}});
  if (!r.ok()) return r.status();
  std::vector<std::pair<std::string, std::string>> held;
  for (int i = 0; i < r->rows(); ++i) held.emplace_back(r->Bytes(i, 0), r->Bytes(i, 1));
  return held;
}

absl::StatusOr<std::vector<v1::Job>> PostgresJobStore::ListInState(v1::JobState state) {
  absl::StatusOr<Result> r = Run("list", "SELECT job FROM jobs WHERE state = $1::int ORDER BY seq ASC",
                                 {{Param::Kind::kText, absl::StrCat(static_cast<int>(state))}});
  if (!r.ok()) return r.status();
  std::vector<v1::Job> jobs;
  for (int i = 0; i < r->rows(); ++i) {
    absl::StatusOr<v1::Job> job = r->Job(i, 0);
    if (!job.ok()) return job.status();
    jobs.push_back(*std::move(job));
  }
  return jobs;
}

}  // namespace modelsmith
