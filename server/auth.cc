#include "server/auth.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/logging.h"
#include "workers/common/error.h"
#include "workers/storage/checksum.h"

namespace modelsmith {
namespace {

constexpr auto kRecheckInterval = std::chrono::seconds(1);

std::optional<Role> ParseRole(absl::string_view name) {
  if (name == "reader") return Role::kReader;
  if (name == "submitter") return Role::kSubmitter;
  if (name == "admin") return Role::kAdmin;
  return std::nullopt;
}

bool Stat(const std::string& path, int64_t* mtime_ns, int64_t* size) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return false;
  *mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  *size = st.st_size;
  return true;
}

absl::StatusOr<std::string> Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return MakeError(absl::StatusCode::kNotFound, "AUTH_FILE_MISSING",
                     absl::StrCat("cannot read auth file '", path, "'"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kReader: return "reader";
    case Role::kSubmitter: return "submitter";
    case Role::kAdmin: return "admin";
  }
  return "?";
}

absl::StatusOr<Authenticator::Rules> Authenticator::Parse(const std::string& text, const std::string& path) {
  Rules rules;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    if (size_t hash = line.find('#'); hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<absl::string_view> words = absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (words.empty()) continue;
    auto invalid = [&](absl::string_view why) {
      return MakeError(absl::StatusCode::kInvalidArgument, "AUTH_FILE_INVALID",
                       absl::StrCat("auth file '", path, "' line ", number, ": ", why),
                       {{"file", path}, {"field", absl::StrCat("line ", number)}});
    };
    if (words.size() != 2 && words.size() != 3) return invalid("expected 'ROLE PRINCIPAL [sha256:HEX]'");
    std::optional<Role> role = ParseRole(words[0]);
    if (!role) return invalid(absl::StrCat("unknown role '", words[0], "' (reader, submitter, admin)"));
    const std::string principal(words[1]);
    if (words.size() == 2) {
      rules.certificates[principal] = *role;
      continue;
    }
    absl::string_view hex = words[2];
    if (!absl::ConsumePrefix(&hex, "sha256:") || hex.size() != 64 ||
        !std::all_of(hex.begin(), hex.end(), [](char c) { return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f'); })) {
      return invalid("a token is given as sha256:HEX, 64 lowercase hex digits of the token's SHA-256");
    }
    rules.tokens[std::string(hex)] = {principal, *role};
  }
  return rules;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::FromFile(const std::string& auth_file) {
  absl::StatusOr<std::string> text = Slurp(auth_file);
  if (!text.ok()) return text.status();
  absl::StatusOr<Rules> rules = Parse(*text, auth_file);
  if (!rules.ok()) return rules.status();
  auto auth = std::make_unique<Authenticator>();
  auth->path_ = auth_file;
  auth->rules_ = *std::move(rules);
  Stat(auth_file, &auth->mtime_ns_, &auth->size_);
  auth->last_check_ = std::chrono::steady_clock::now();
  return auth;
}

void Authenticator::ReloadIfChanged() {
  // REQUIRES: mutex_ held.
  const auto now = std::chrono::steady_clock::now();
  if (now - last_check_ < kRecheckInterval) return;
  last_check_ = now;
  int64_t mtime = 0, size = 0;
  if (!Stat(path_, &mtime, &size) || (mtime == mtime_ns_ && size == size_)) return;
  absl::StatusOr<std::string> text = Slurp(path_);
  absl::StatusOr<Rules> rules = text.ok() ? Parse(*text, path_) : absl::StatusOr<Rules>(text.status());
  if (!rules.ok()) {
    LogError("", absl::StrCat("auth file changed but is not used: ", rules.status().message(),
                              "; the previous rules stay in force"));
    return;
  }
  rules_ = *std::move(rules);
  mtime_ns_ = mtime;
  size_ = size;
  LogInfo("", absl::StrCat("auth file '", path_, "' reloaded: ", rules_.tokens.size(), " token(s), ",
                           rules_.certificates.size(), " certificate principal(s)"));
}

absl::StatusOr<Principal> Authenticator::Authenticate(const grpc::CallbackServerContext& context) {
  Principal principal;
  principal.peer = context.peer();
  if (!enabled()) {
    principal.name = "anonymous";
    principal.role = Role::kAdmin;
    return principal;
  }
  std::lock_guard lock(mutex_);
  ReloadIfChanged();
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    absl::string_view value(it->second.data(), it->second.size());
    if (absl::ConsumePrefix(&value, "Bearer ") || absl::ConsumePrefix(&value, "bearer ")) {
      auto rule = rules_.tokens.find(Sha256Hex(absl::StripAsciiWhitespace(value)));
      if (rule != rules_.tokens.end()) {
        principal.name = rule->second.first;
        principal.role = rule->second.second;
        return principal;
      }
    }
    return MakeError(absl::StatusCode::kUnauthenticated, "UNAUTHENTICATED", "the bearer token is not known");
  }
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const grpc::string_ref& cn : auth->FindPropertyValues("x509_common_name")) {
      auto rule = rules_.certificates.find(std::string(cn.data(), cn.size()));
      if (rule != rules_.certificates.end()) {
        principal.name = rule->first;
        principal.role = rule->second;
        return principal;
      }
    }
    return MakeError(absl::StatusCode::kUnauthenticated, "UNAUTHENTICATED",
                     "the client certificate's subject is not a known principal");
  }
  return MakeError(absl::StatusCode::kUnauthenticated, "UNAUTHENTICATED",
                   "credentials are required: a bearer token (authorization: Bearer ...) or a client certificate");
}

absl::Status Authenticator::Require(const Principal& principal, Role role, absl::string_view what) {
  if (static_cast<int>(principal.role) >= static_cast<int>(role)) return absl::OkStatus();
  return MakeError(absl::StatusCode::kPermissionDenied, "ROLE_REQUIRED",
                   absl::StrCat(what, " needs role '", RoleName(role), "'; '", principal.name, "' has '",
                                RoleName(principal.role), "'"),
                   {{"role", RoleName(role)}, {"principal", principal.name}});
}

}  // namespace modelsmith
