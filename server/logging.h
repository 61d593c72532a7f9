// Process logging on spdlog: one line per event, with the job id when there is one.
// Text: "2026-11-22 14:00:00.000 info  [job-…] message". JSON (--log-format json): one object
// per line, {"time","level","job_id","msg"}, for log shippers.
#ifndef MODELSMITH_SERVER_LOGGING_H_
#define MODELSMITH_SERVER_LOGGING_H_

#include "absl/strings/string_view.h"
#include <string_view>

namespace modelsmith {

enum class LogFormat { kText, kJson };

// Logs go to stderr. Call once at startup, before other threads log.
void InitLogging(LogFormat format);

void LogInfo(absl::string_view job_id, absl::string_view message);
void LogWarn(absl::string_view job_id, absl::string_view message);
void LogError(absl::string_view job_id, absl::string_view message);

// One audit line for a submit or cancel: who (principal, peer address), which job, and the
// outcome ("OK" or the error's reason). JSON fields with --log-format json.
void LogAudit(absl::string_view action, absl::string_view principal, absl::string_view peer, absl::string_view job_id,
              absl::string_view outcome);

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_LOGGING_H_
