#include "server/sqlite_job_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

// A prepared statement that finalizes itself.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) { rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr); }
  ~Statement() { sqlite3_finalize(stmt_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() { return stmt_; }
  void Bind(int i, const std::string& text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int i, const std::string& bytes) {
    sqlite3_bind_blob(stmt_, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, int64_t value) { sqlite3_bind_int64(stmt_, i, value); }
  void BindNull(int i) { sqlite3_bind_null(stmt_, i); }
  int Step() { return sqlite3_step(stmt_); }
  std::string Error() const { return sqlite3_errmsg(db_); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

absl::Status DbError(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("job database: ", what, ": ", sqlite3_errmsg(db)));
}

absl::StatusOr<v1::Job> ParseJobColumn(sqlite3_stmt* stmt, int column) {
  v1::Job job;
  const void* blob = sqlite3_column_blob(stmt, column);
  int size = sqlite3_column_bytes(stmt, column);
  if (!job.ParseFromArray(blob, size)) {
    return absl::DataLossError("job database: a stored job does not parse");
  }
  return job;
}

std::string ColumnText(sqlite3_stmt* stmt, int column) {
  const unsigned char* text = sqlite3_column_text(stmt, column);
  return text == nullptr ? "" : reinterpret_cast<const char*>(text);
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> SqliteJobStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open job database '", path, "': ", message));
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<SqliteJobStore> store(new SqliteJobStore(db, path));
  for (const char* sql : {
           "PRAGMA journal_mode=WAL",
           // FULL: a job the API acknowledged survives a power loss, not only a crash.
           "PRAGMA synchronous=FULL",
           "CREATE TABLE IF NOT EXISTS jobs ("
           "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
           "  id TEXT NOT NULL UNIQUE,"
           "  kind INTEGER NOT NULL,"
           "  state INTEGER NOT NULL,"
           "  request_id TEXT UNIQUE,"
           "  spec_fingerprint TEXT NOT NULL,"
           "  job BLOB NOT NULL,"
           "  output_key TEXT)",
           "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state, seq)",
       }) {
    if (absl::Status s = store->Exec(sql); !s.ok()) return s;
  }
  absl::StatusOr<int64_t> version = store->UserVersion();
  if (!version.ok()) return version.status();
  if (*version < 2) {
    // A version 1 table was created without output_key (a fresh one has it already).
    if (!store->HasColumn("jobs", "output_key")) {
      if (absl::Status s = store->Exec("ALTER TABLE jobs ADD COLUMN output_key TEXT"); !s.ok()) return s;
    }
    if (absl::Status s = store->Exec("PRAGMA user_version=2"); !s.ok()) return s;
  }
  if (*version < 3) {
    // Version 3: leases (lease_expires_ms: this machine's clock, ms since the epoch; NULL for none).
    for (const char* sql : {
             "ALTER TABLE jobs ADD COLUMN estimated_peak_bytes INTEGER NOT NULL DEFAULT 0",
             "ALTER TABLE jobs ADD COLUMN lease_owner TEXT",
             "ALTER TABLE jobs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0",
             "ALTER TABLE jobs ADD COLUMN lease_expires_ms INTEGER",
             "PRAGMA user_version=3",
         }) {
      if (absl::Status s = store->Exec(sql); !s.ok()) return s;
    }
  }
  if (*version < 4) {
    // Version 4: the owner as a column (quotas), cancel requests, events and replica heartbeats,
    // the same rows as PostgreSQL's, so one contract holds for both.
    for (const char* sql : {
             "ALTER TABLE jobs ADD COLUMN owner TEXT",
             "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
             "CREATE TABLE job_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,"
             "  event BLOB NOT NULL, created_ms INTEGER NOT NULL)",
             "CREATE INDEX job_events_by_job ON job_events(job_id, seq)",
             "CREATE TABLE replicas (replica TEXT PRIMARY KEY, heartbeat_ms INTEGER NOT NULL)",
             "PRAGMA user_version=4",
         }) {
      if (absl::Status s = store->Exec(sql); !s.ok()) return s;
    }
  }
  return store;
}

SqliteJobStore::~SqliteJobStore() {
  sqlite3_close(db_);
  if (server_lock_fd_ >= 0) close(server_lock_fd_);
}

absl::Status SqliteJobStore::ClaimSoleServer() {
  // A lock file beside the database: flock, not fcntl, so it never meets SQLite's own locks.
  const std::string lock_path = path_ + ".lock";
  const int fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot open '", lock_path, "': ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return MakeError(absl::StatusCode::kFailedPrecondition, "DATABASE_IN_USE",
                     absl::StrCat("another modelsmithd serves the job database '", path_,
                                  "'; an SQLite database is one server's (replicas share a PostgreSQL database)"),
                     {{"database", path_}});
  }
  server_lock_fd_ = fd;
  return absl::OkStatus();
}

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t LeaseMs(double seconds) { return static_cast<int64_t>(seconds * 1000); }

}  // namespace

absl::StatusOr<std::optional<ClaimedJob>> SqliteJobStore::ClaimNext(const std::string& replica, double lease_seconds,
                                                                    uint64_t max_bytes) {
  return Claim(replica, lease_seconds, max_bytes, "");
}

absl::StatusOr<std::optional<ClaimedJob>> SqliteJobStore::ClaimById(const std::string& id, const std::string& replica,
                                                                    double lease_seconds) {
  return Claim(replica, lease_seconds, UINT64_MAX, id);
}

absl::StatusOr<std::optional<ClaimedJob>> SqliteJobStore::Claim(const std::string& replica, double lease_seconds,
                                                                uint64_t max_bytes, const std::string& only_id) {
  std::lock_guard lock(mutex_);
  // IMMEDIATE: the write lock first, so another process on the file cannot claim in between.
  if (absl::Status s = Exec("BEGIN IMMEDIATE"); !s.ok()) return s;
  auto rollback = [&](absl::Status s) {
    (void)Exec("ROLLBACK");
    return s;
  };
  const int64_t now = NowMs();
  Statement pick(db_,
                 "SELECT seq, job, (SELECT COALESCE(MAX(lease_token), 0) + 1 FROM jobs), cancel_requested FROM jobs "
                 "WHERE state IN (?, ?) AND estimated_peak_bytes <= ? AND (lease_expires_ms IS NULL OR "
                 "lease_expires_ms < ?) AND (?5 = '' OR id = ?5) ORDER BY seq ASC LIMIT 1");
  if (!pick.ok()) return rollback(DbError(db_, "prepare claim"));
  pick.Bind(1, int64_t{v1::JOB_STATE_QUEUED});
  pick.Bind(2, int64_t{v1::JOB_STATE_RUNNING});
  pick.Bind(3, static_cast<int64_t>(std::min<uint64_t>(max_bytes, INT64_MAX)));
  pick.Bind(4, now);
  pick.Bind(5, only_id);
  const int rc = pick.Step();
  if (rc == SQLITE_DONE) {
    (void)Exec("COMMIT");
    return std::nullopt;
  }
  if (rc != SQLITE_ROW) return rollback(DbError(db_, "claim"));
  const int64_t seq = sqlite3_column_int64(pick.get(), 0);
  absl::StatusOr<v1::Job> job = ParseJobColumn(pick.get(), 1);
  if (!job.ok()) return rollback(job.status());
  const int64_t token = sqlite3_column_int64(pick.get(), 2);
  const bool cancel_requested = sqlite3_column_int64(pick.get(), 3) != 0;
  Statement take(db_, "UPDATE jobs SET lease_owner = ?, lease_token = ?, lease_expires_ms = ? WHERE seq = ?");
  if (!take.ok()) return rollback(DbError(db_, "prepare claim"));
  take.Bind(1, replica);
  take.Bind(2, token);
  take.Bind(3, now + LeaseMs(lease_seconds));
  take.Bind(4, seq);
  if (take.Step() != SQLITE_DONE) return rollback(DbError(db_, "claim"));
  if (absl::Status s = Exec("COMMIT"); !s.ok()) return rollback(s);
  return ClaimedJob{*std::move(job), token, cancel_requested};
}

absl::Status SqliteJobStore::ReleaseAllLeases() {
  std::lock_guard lock(mutex_);
  return Exec("UPDATE jobs SET lease_owner = NULL, lease_expires_ms = NULL WHERE lease_expires_ms IS NOT NULL");
}

absl::Status SqliteJobStore::RequestCancel(const std::string& id) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "UPDATE jobs SET cancel_requested = 1 WHERE id = ?");
  if (!st.ok()) return DbError(db_, "prepare cancel");
  st.Bind(1, id);
  if (st.Step() != SQLITE_DONE) return DbError(db_, "cancel");
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("job '", id, "' not found"));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> SqliteJobStore::ListCancelRequested(const std::string& replica) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "SELECT id FROM jobs WHERE lease_owner = ? AND cancel_requested = 1 AND state IN (?, ?)");
  if (!st.ok()) return DbError(db_, "prepare cancel requests");
  st.Bind(1, replica);
  st.Bind(2, int64_t{v1::JOB_STATE_QUEUED});
  st.Bind(3, int64_t{v1::JOB_STATE_RUNNING});
  std::vector<std::string> ids;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) ids.push_back(ColumnText(st.get(), 0));
  if (rc != SQLITE_DONE) return DbError(db_, "cancel requests");
  return ids;
}

absl::Status SqliteJobStore::AppendEvent(const std::string& id, const v1::JobEvent& event) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "INSERT INTO job_events(job_id, event, created_ms) VALUES (?, ?, ?)");
  if (!st.ok()) return DbError(db_, "prepare event");
  st.Bind(1, id);
  st.BindBlob(2, event.SerializeAsString());
  st.Bind(3, NowMs());
  if (st.Step() != SQLITE_DONE) return DbError(db_, "event");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<int64_t, v1::JobEvent>>> SqliteJobStore::ListEvents(const std::string& id,
                                                                                         int64_t after, int limit) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "SELECT seq, event FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq ASC LIMIT ?");
  if (!st.ok()) return DbError(db_, "prepare events");
  st.Bind(1, id);
  st.Bind(2, after);
  st.Bind(3, int64_t{limit});
  std::vector<std::pair<int64_t, v1::JobEvent>> events;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    v1::JobEvent event;
    if (!event.ParseFromArray(sqlite3_column_blob(st.get(), 1), sqlite3_column_bytes(st.get(), 1))) {
      return absl::DataLossError("job database: a stored event does not parse");
    }
    events.emplace_back(sqlite3_column_int64(st.get(), 0), std::move(event));
  }
  if (rc != SQLITE_DONE) return DbError(db_, "events");
  return events;
}

absl::StatusOr<int64_t> SqliteJobStore::LastEventSeq(const std::string& id) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "SELECT COALESCE(MAX(seq), 0) FROM job_events WHERE job_id = ?");
  if (!st.ok()) return DbError(db_, "prepare events");
  st.Bind(1, id);
  if (st.Step() != SQLITE_ROW) return DbError(db_, "events");
  return sqlite3_column_int64(st.get(), 0);
}

absl::Status SqliteJobStore::PruneEvents(double age_seconds) {
  std::lock_guard lock(mutex_);
  Statement st(db_,
               "DELETE FROM job_events WHERE created_ms < ? AND job_id IN "
               "(SELECT id FROM jobs WHERE state NOT IN (?, ?))");
  if (!st.ok()) return DbError(db_, "prepare prune");
  st.Bind(1, NowMs() - LeaseMs(age_seconds));
  st.Bind(2, int64_t{v1::JOB_STATE_QUEUED});
  st.Bind(3, int64_t{v1::JOB_STATE_RUNNING});
  if (st.Step() != SQLITE_DONE) return DbError(db_, "prune");
  return absl::OkStatus();
}

absl::Status SqliteJobStore::Heartbeat(const std::string& replica) {
  std::lock_guard lock(mutex_);
  Statement st(db_,
               "INSERT INTO replicas(replica, heartbeat_ms) VALUES (?1, ?2) "
               "ON CONFLICT(replica) DO UPDATE SET heartbeat_ms = ?2");
  if (!st.ok()) return DbError(db_, "prepare heartbeat");
  st.Bind(1, replica);
  st.Bind(2, NowMs());
  if (st.Step() != SQLITE_DONE) return DbError(db_, "heartbeat");
  return absl::OkStatus();
}

absl::Status SqliteJobStore::RemoveReplica(const std::string& replica) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "DELETE FROM replicas WHERE replica = ?");
  if (!st.ok()) return DbError(db_, "prepare remove replica");
  st.Bind(1, replica);
  if (st.Step() != SQLITE_DONE) return DbError(db_, "remove replica");
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteJobStore::CountLiveReplicas(double within_seconds) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "SELECT COUNT(*) FROM replicas WHERE heartbeat_ms >= ?");
  if (!st.ok()) return DbError(db_, "prepare replicas");
  st.Bind(1, NowMs() - LeaseMs(within_seconds));
  if (st.Step() != SQLITE_ROW) return DbError(db_, "replicas");
  return sqlite3_column_int64(st.get(), 0);
}

absl::StatusOr<ActiveJobCounts> SqliteJobStore::CountActive(const std::string& owner) {
  std::lock_guard lock(mutex_);
  Statement st(db_,
               "SELECT COALESCE(SUM(state = ?1), 0), COALESCE(SUM(state = ?2), 0) FROM jobs "
               "WHERE state IN (?1, ?2) AND (?3 = '' OR owner = ?3)");
  if (!st.ok()) return DbError(db_, "prepare count");
  st.Bind(1, int64_t{v1::JOB_STATE_QUEUED});
  st.Bind(2, int64_t{v1::JOB_STATE_RUNNING});
  st.Bind(3, owner);
  if (st.Step() != SQLITE_ROW) return DbError(db_, "count");
  return ActiveJobCounts{sqlite3_column_int64(st.get(), 0), sqlite3_column_int64(st.get(), 1)};
}

absl::Status SqliteJobStore::RenewLease(const std::string& id, int64_t token, double lease_seconds) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "UPDATE jobs SET lease_expires_ms = ? WHERE id = ? AND lease_token = ?");
  if (!st.ok()) return DbError(db_, "prepare renew");
  st.Bind(1, NowMs() + LeaseMs(lease_seconds));
  st.Bind(2, id);
  st.Bind(3, token);
  if (st.Step() != SQLITE_DONE) return DbError(db_, "renew");
  return sqlite3_changes(db_) == 1 ? absl::OkStatus() : LeaseLostError(id);
}

absl::Status SqliteJobStore::UpdateFenced(const v1::Job& job, int64_t token) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "UPDATE jobs SET state = ?, job = ? WHERE id = ? AND lease_token = ?");
  if (!st.ok()) return DbError(db_, "prepare update");
  st.Bind(1, int64_t{job.state()});
  st.BindBlob(2, job.SerializeAsString());
  st.Bind(3, job.id());
  st.Bind(4, token);
  if (st.Step() != SQLITE_DONE) return DbError(db_, "update");
  if (sqlite3_changes(db_) == 1) return absl::OkStatus();
  Statement exists(db_, "SELECT 1 FROM jobs WHERE id = ?");
  exists.Bind(1, job.id());
  if (exists.ok() && exists.Step() == SQLITE_ROW) return LeaseLostError(job.id());
  return absl::NotFoundError(absl::StrCat("job '", job.id(), "' not found"));
}

absl::Status SqliteJobStore::ReleaseLease(const std::string& id, int64_t token) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "UPDATE jobs SET lease_owner = NULL, lease_expires_ms = NULL WHERE id = ? AND lease_token = ?");
  if (!st.ok()) return DbError(db_, "prepare release");
  st.Bind(1, id);
  st.Bind(2, token);
  if (st.Step() != SQLITE_DONE) return DbError(db_, "release");
  return sqlite3_changes(db_) == 1 ? absl::OkStatus() : LeaseLostError(id);
}

absl::Status SqliteJobStore::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    absl::Status s = absl::InternalError(absl::StrCat("job database: ", sql, ": ", error ? error : "?"));
    sqlite3_free(error);
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteJobStore::UserVersion() {
  Statement st(db_, "PRAGMA user_version");
  if (!st.ok() || st.Step() != SQLITE_ROW) return DbError(db_, "read user_version");
  return sqlite3_column_int64(st.get(), 0);
}

bool SqliteJobStore::HasColumn(const char* table, const char* column) {
  Statement st(db_, absl::StrCat("PRAGMA table_info(", table, ")").c_str());
  while (st.ok() && st.Step() == SQLITE_ROW) {
    const unsigned char* name = sqlite3_column_text(st.get(), 1);
    if (name != nullptr && std::string_view(reinterpret_cast<const char*>(name)) == column) return true;
  }
  return false;
}

absl::Status SqliteJobStore::Insert(const v1::Job& job, const std::string& spec_fingerprint,
                                    const std::string& output_key) {
  std::lock_guard lock(mutex_);
  Statement st(db_,
               "INSERT INTO jobs(id, kind, state, request_id, spec_fingerprint, job, output_key, estimated_peak_bytes, "
               "owner) VALUES(?,?,?,?,?,?,?,?,?)");
  if (!st.ok()) return DbError(db_, "prepare insert");
  st.Bind(1, job.id());
  st.Bind(2, int64_t{job.kind()});
  st.Bind(3, int64_t{job.state()});
  if (job.request_id().empty())
    st.BindNull(4);
  else
    st.Bind(4, job.request_id());
  st.Bind(5, spec_fingerprint);
  st.BindBlob(6, job.SerializeAsString());
  if (output_key.empty())
    st.BindNull(7);
  else
    st.Bind(7, output_key);
  st.Bind(8, static_cast<int64_t>(job.estimated_peak_bytes()));
  st.Bind(9, job.owner());
  int rc = st.Step();
  if (rc == SQLITE_CONSTRAINT) return absl::AlreadyExistsError("a job with this id or request_id exists");
  if (rc != SQLITE_DONE) return DbError(db_, "insert");
  return absl::OkStatus();
}

absl::Status SqliteJobStore::Update(const v1::Job& job) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "UPDATE jobs SET state=?, job=? WHERE id=?");
  if (!st.ok()) return DbError(db_, "prepare update");
  st.Bind(1, int64_t{job.state()});
  st.BindBlob(2, job.SerializeAsString());
  st.Bind(3, job.id());
  if (st.Step() != SQLITE_DONE) return DbError(db_, "update");
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("job '", job.id(), "' not found"));
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> SqliteJobStore::Get(const std::string& id) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "SELECT job FROM jobs WHERE id=?");
  if (!st.ok()) return DbError(db_, "prepare get");
  st.Bind(1, id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat("job '", id, "' not found"));
  if (rc != SQLITE_ROW) return DbError(db_, "get");
  return ParseJobColumn(st.get(), 0);
}

absl::StatusOr<std::optional<std::pair<v1::Job, std::string>>> SqliteJobStore::FindByRequestId(
    const std::string& request_id) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "SELECT job, spec_fingerprint FROM jobs WHERE request_id=?");
  if (!st.ok()) return DbError(db_, "prepare find");
  st.Bind(1, request_id);
  int rc = st.Step();
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) return DbError(db_, "find");
  absl::StatusOr<v1::Job> job = ParseJobColumn(st.get(), 0);
  if (!job.ok()) return job.status();
  const unsigned char* fp = sqlite3_column_text(st.get(), 1);
  return std::make_pair(*std::move(job), std::string(fp ? reinterpret_cast<const char*>(fp) : ""));
}

absl::StatusOr<std::vector<StoredJob>> SqliteJobStore::List(v1::JobState state, v1::JobKind kind, int64_t before_seq,
                                                            int limit) {
  std::lock_guard lock(mutex_);
  Statement st(db_,
               "SELECT seq, job FROM jobs WHERE (?1 = 0 OR state = ?1) AND (?2 = 0 OR kind = ?2) "
               "AND (?3 = 0 OR seq < ?3) ORDER BY seq DESC LIMIT ?4");
  if (!st.ok()) return DbError(db_, "prepare list");
  st.Bind(1, int64_t{state});
  st.Bind(2, int64_t{kind});
  st.Bind(3, before_seq);
  st.Bind(4, int64_t{limit});
  std::vector<StoredJob> rows;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    absl::StatusOr<v1::Job> job = ParseJobColumn(st.get(), 1);
    if (!job.ok()) return job.status();
    rows.push_back({sqlite3_column_int64(st.get(), 0), *std::move(job)});
  }
  if (rc != SQLITE_DONE) return DbError(db_, "list");
  return rows;
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> SqliteJobStore::ListHeldOutputs() {
  std::lock_guard lock(mutex_);
  Statement st(db_, "SELECT id, output_key FROM jobs WHERE state IN (?, ?) AND output_key IS NOT NULL");
  if (!st.ok()) return DbError(db_, "prepare held outputs");
  st.Bind(1, int64_t{v1::JOB_STATE_QUEUED});
  st.Bind(2, int64_t{v1::JOB_STATE_RUNNING});
  std::vector<std::pair<std::string, std::string>> held;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    held.emplace_back(ColumnText(st.get(), 0), ColumnText(st.get(), 1));
  }
  if (rc != SQLITE_DONE) return DbError(db_, "held outputs");
  return held;
}

absl::StatusOr<std::vector<v1::Job>> SqliteJobStore::ListInState(v1::JobState state) {
  std::lock_guard lock(mutex_);
  Statement st(db_, "SELECT job FROM jobs WHERE state = ? ORDER BY seq ASC");
  if (!st.ok()) return DbError(db_, "prepare list");
  st.Bind(1, int64_t{state});
  std::vector<v1::Job> jobs;
  int rc;
  while ((rc = st.Step()) == SQLITE_ROW) {
    absl::StatusOr<v1::Job> job = ParseJobColumn(st.get(), 0);
    if (!job.ok()) return job.status();
    jobs.push_back(*std::move(job));
  }
  if (rc != SQLITE_DONE) return DbError(db_, "list");
  return jobs;
}

}  // namespace modelsmith
