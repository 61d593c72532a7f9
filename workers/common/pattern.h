// Pattern: a regular expression from an untrusted source (a client's spec, an adapter's config)
// matched against untrusted text (tensor names from a file). Compiled by RE2: matching runs in
// time linear in the text and never recurses, so neither a pathological pattern such as "(a*)*b"
// nor a very long name can exhaust the CPU or the stack. RE2's syntax is ECMAScript's without
// backreferences and lookaround (https://github.com/google/re2/wiki/Syntax).
//
// Copyable and cheap to copy (the compiled form is shared); matching is thread-safe.
#ifndef MODELSMITH_WORKERS_COMMON_PATTERN_H_
#define MODELSMITH_WORKERS_COMMON_PATTERN_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace re2 {
class RE2;
}

namespace modelsmith {

class Pattern {
 public:
  // INVALID_ARGUMENT, reason INVALID_REGEX, naming `field`, when RE2 rejects `pattern` (bad
  // syntax, a backreference or lookaround, or a program larger than RE2's memory budget).
  static absl::StatusOr<Pattern> Compile(absl::string_view pattern, absl::string_view field);

  // The whole of `text` matches.
  bool FullMatch(absl::string_view text) const;
  // Some part of `text` matches.
  bool PartialMatch(absl::string_view text) const;
  // When the whole of `text` matches: `replacement` with $0..$9 (and $&) replaced by the groups,
  // "$$" by '$' (ECMAScript's replacement syntax, which the specs document). Else nullopt.
  std::optional<std::string> ReplaceFullMatch(absl::string_view text, absl::string_view replacement) const;

  const std::string& source() const { return source_; }

 private:
  Pattern(std::shared_ptr<const re2::RE2> re, std::string source) : re_(std::move(re)), source_(std::move(source)) {}

  std::shared_ptr<const re2::RE2> re_;
  std::string source_;
};

// True when any of `patterns` matches the whole of `text`.
bool AnyFullMatch(const std::vector<Pattern>& patterns, absl::string_view text);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_COMMON_PATTERN_H_
