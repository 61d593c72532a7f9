// Authenticator: who is calling and what they may do, from the rules of `--auth-file`.
//
// The file has one rule per line ('#' starts a comment, blank lines are skipped):
//   ROLE PRINCIPAL sha256:HEX   a bearer token (metadata "authorization: Bearer TOKEN") whose
//                               SHA-256, in lowercase hex, is HEX authenticates as PRINCIPAL
//   ROLE PRINCIPAL              a client certificate (mutual TLS) whose subject CN is PRINCIPAL
// Roles, each including the one before: reader (GetJob, ListJobs, WatchJob, InspectModel),
// submitter (SubmitJob, CancelJob of its own jobs), admin (cancel any job). Tokens are only ever
// held as hashes and never logged.
//
// The file is checked for a change (mtime, size) at most once a second and re-read: a rotation is
// rewriting it. A file that no longer parses keeps the previous rules (and logs why).
// Without an auth file every caller is "anonymous" with role admin (the loopback default).
// Thread-safe.
#ifndef MODELSMITH_SERVER_AUTH_H_
#define MODELSMITH_SERVER_AUTH_H_

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace modelsmith {

enum class Role { kReader = 1, kSubmitter = 2, kAdmin = 3 };

const char* RoleName(Role role);

struct Principal {
  std::string name;
  Role role = Role::kReader;
  std::string peer;  // the caller's address, for the audit log
};

class Authenticator {
 public:
  // Auth off: everyone is "anonymous", admin.
  Authenticator() = default;
  // Reads `auth_file`; INVALID_ARGUMENT (AUTH_FILE_INVALID, naming the line) when it does not parse,
  // NOT_FOUND when it cannot be read.
  static absl::StatusOr<std::unique_ptr<Authenticator>> FromFile(const std::string& auth_file);

  bool enabled() const { return !path_.empty(); }

  // The caller of `context`. UNAUTHENTICATED (reason UNAUTHENTICATED) without a known token or
  // certificate.
  absl::StatusOr<Principal> Authenticate(const grpc::CallbackServerContext& context);

  // PERMISSION_DENIED (reason ROLE_REQUIRED, naming the role in "role") unless `principal` has
  // at least `role`.
  static absl::Status Require(const Principal& principal, Role role, absl::string_view what);

 private:
  struct Rules {
    std::map<std::string, std::pair<std::string, Role>> tokens;  // sha256 hex -> principal, role
    std::map<std::string, Role> certificates;                    // CN -> role
  };
  static absl::StatusOr<Rules> Parse(const std::string& text, const std::string& path);
  void ReloadIfChanged();

  std::string path_;
  std::mutex mutex_;
  Rules rules_;
  std::chrono::steady_clock::time_point last_check_{};
  int64_t mtime_ns_ = 0;
  int64_t size_ = -1;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_AUTH_H_
