#include "server/job_store.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/postgres_job_store.h"
#include "server/sqlite_job_store.h"
#include "workers/common/error.h"

namespace modelsmith {

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& url) {
  if (absl::StartsWith(url, "postgresql://") || absl::StartsWith(url, "postgres://")) {
    return PostgresJobStore::Open(url);
  }
  if (absl::StartsWith(url, "sqlite:")) return SqliteJobStore::Open(url.substr(7));
  if (absl::StrContains(url, "://") || url.empty()) {
    const std::string shown = RedactDatabaseUrl(url);
    return MakeError(absl::StatusCode::kInvalidArgument, "DATABASE_URL_INVALID",
                     absl::StrCat("database '", shown, "' is neither sqlite:PATH nor postgresql://..."),
                     {{"field", "database"}});
  }
  return SqliteJobStore::Open(url);
}

absl::Status LeaseLostError(const std::string& id) {
  return MakeError(absl::StatusCode::kFailedPrecondition, "LEASE_LOST",
                   absl::StrCat("job '", id, "' was claimed by another replica"), {{"job_id", id}});
}

std::string RedactDatabaseUrl(const std::string& url) {
  std::string out = url;
  // scheme://user:PASSWORD@host
  if (const size_t scheme = out.find("://"); scheme != std::string::npos) {
    const size_t authority = scheme + 3;
    const size_t at = out.find('@', authority);
    const size_t end = out.find_first_of("/?", authority);
    if (at != std::string::npos && (end == std::string::npos || at < end)) {
      const size_t colon = out.find(':', authority);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // ...?password=PASSWORD&...
  for (size_t at = out.find("password="); at != std::string::npos; at = out.find("password=", at + 1)) {
    const size_t value = at + 9;
    const size_t end = out.find('&', value);
    out.replace(value, (end == std::string::npos ? out.size() : end) - value, "***");
  }
  return out;
}

}  // namespace modelsmith
