#include "workers/common/pattern.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "re2/re2.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

// Compiled programs beyond this are refused: a client's pattern may not take the server's memory.
constexpr int64_t kMaxProgramBytes = 8 << 20;
constexpr int kMaxGroups = 10;

}  // namespace

absl::StatusOr<Pattern> Pattern::Compile(absl::string_view pattern, absl::string_view field) {
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(kMaxProgramBytes);
  auto re = std::make_shared<const RE2>(re2::StringPiece(pattern.data(), pattern.size()), options);
  if (!re->ok()) {
    return FieldError("INVALID_REGEX", field,
                      absl::StrCat("'", pattern, "' is not a valid regular expression (RE2 syntax): ", re->error()));
  }
  return Pattern(std::move(re), std::string(pattern));
}

bool Pattern::FullMatch(absl::string_view text) const {
  return RE2::FullMatch(re2::StringPiece(text.data(), text.size()), *re_);
}

bool Pattern::PartialMatch(absl::string_view text) const {
  return RE2::PartialMatch(re2::StringPiece(text.data(), text.size()), *re_);
}

std::optional<std::string> Pattern::ReplaceFullMatch(absl::string_view text, absl::string_view replacement) const {
  const int groups = std::min(re_->NumberOfCapturingGroups(), kMaxGroups - 1);
  std::vector<re2::StringPiece> found(groups + 1);
  if (!re_->Match(re2::StringPiece(text.data(), text.size()), 0, text.size(), RE2::ANCHOR_BOTH, found.data(),
                  groups + 1)) {
    return std::nullopt;
  }
  std::string out;
  for (size_t i = 0; i < replacement.size(); ++i) {
    const char c = replacement[i];
    if (c != '$' || i + 1 == replacement.size()) {
      out.push_back(c);
      continue;
    }
    const char next = replacement[i + 1];
    if (next == '$') {
      out.push_back('$');
      ++i;
    } else if (next == '&' || (next >= '0' && next <= '9')) {
      const int group = next == '&' ? 0 : next - '0';
      if (group <= groups) out.append(found[group].data(), found[group].size());
      ++i;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

bool AnyFullMatch(const std::vector<Pattern>& patterns, absl::string_view text) {
  for (const Pattern& p : patterns) {
    if (p.FullMatch(text)) return true;
  }
  return false;
}

}  // namespace modelsmith
