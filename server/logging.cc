#include "server/logging.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace modelsmith {
namespace {

LogFormat g_format = LogFormat::kText;

void Log(spdlog::level::level_enum level, absl::string_view job_id, absl::string_view message) {
  if (g_format == LogFormat::kJson) {
    nlohmann::ordered_json line;
    if (!job_id.empty()) line["job_id"] = std::string(job_id);
    line["msg"] = std::string(message);
    // dump() escapes control characters and quotes; invalid UTF-8 is replaced, never thrown.
    std::string fields = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    spdlog::log(level, "{}", fields.substr(1, fields.size() - 2));
    return;
  }
  if (job_id.empty()) {
    spdlog::log(level, "{}", std::string(message));
  } else {
    spdlog::log(level, "[{}] {}", std::string(job_id), std::string(message));
  }
}

}  // namespace

void InitLogging(LogFormat format) {
  g_format = format;
  auto logger = spdlog::stderr_logger_mt("modelsmithd");
  if (format == LogFormat::kJson) {
    logger->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l",%v})", spdlog::pattern_time_type::utc);
  } else {
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %-5l %v");
  }
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void LogAudit(absl::string_view action, absl::string_view principal, absl::string_view peer, absl::string_view job_id,
              absl::string_view outcome) {
  if (g_format == LogFormat::kJson) {
    nlohmann::ordered_json line;
    line["audit"] = std::string(action);
    line["principal"] = std::string(principal);
    line["peer"] = std::string(peer);
    if (!job_id.empty()) line["job_id"] = std::string(job_id);
    line["outcome"] = std::string(outcome);
    line["msg"] = absl::StrCat("audit ", action, " by ", principal, ": ", outcome);
    std::string fields = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    spdlog::info("{}", fields.substr(1, fields.size() - 2));
    return;
  }
  spdlog::info("audit {} principal={} peer={} job={} outcome={}", std::string(action), std::string(principal),
               std::string(peer), job_id.empty() ? std::string("-") : std::string(job_id), std::string(outcome));
}

void LogInfo(absl::string_view job_id, absl::string_view message) { Log(spdlog::level::info, job_id, message); }
void LogWarn(absl::string_view job_id, absl::string_view message) { Log(spdlog::level::warn, job_id, message); }
void LogError(absl::string_view job_id, absl::string_view message) { Log(spdlog::level::err, job_id, message); }

}  // namespace modelsmith
