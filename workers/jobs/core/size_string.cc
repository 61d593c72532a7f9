#include "workers/jobs/core/size_string.h"

#include <array>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

constexpr std::array<std::pair<absl::string_view, uint64_t>, 9> kUnits = {{
    {"B", 1},
    {"KB", 1'000},
    {"MB", 1'000'000},
    {"GB", 1'000'000'000},
    {"TB", 1'000'000'000'000},
    {"KiB", uint64_t{1} << 10},
    {"MiB", uint64_t{1} << 20},
    {"GiB", uint64_t{1} << 30},
    {"TiB", uint64_t{1} << 40},
}};

absl::Status Invalid(absl::string_view text, absl::string_view why) {
  return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_SIZE",
                   absl::StrCat("size '", text, "' ", why,
                                " (write e.g. 5GB = 5*10^9 bytes, 5GiB = 5*2^30 bytes, or a "
                                "byte count)"));
}

}  // namespace

absl::StatusOr<uint64_t> ParseSize(absl::string_view text) {
  absl::string_view s = absl::StripAsciiWhitespace(text);
  if (s == "none" || s == "0") return 0;
  if (s == "hf_default") return kHfDefaultShardBytes;
  size_t pos = 0;
  uint64_t whole = 0;
  while (pos < s.size() && absl::ascii_isdigit(s[pos])) {
    if (__builtin_mul_overflow(whole, uint64_t{10}, &whole) ||
        __builtin_add_overflow(whole, uint64_t(s[pos] - '0'), &whole)) {
      return Invalid(text, "is too large");
    }
    ++pos;
  }
  if (pos == 0) return Invalid(text, "does not start with a number");
  absl::string_view fraction;
  if (pos < s.size() && s[pos] == '.') {
    size_t start = ++pos;
    while (pos < s.size() && absl::ascii_isdigit(s[pos])) ++pos;
    fraction = s.substr(start, pos - start);
    if (fraction.empty()) return Invalid(text, "has no digits after the decimal point");
    if (fraction.size() > 12) return Invalid(text, "has more than 12 decimal places");
  }
  absl::string_view unit = s.substr(pos);
  if (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  if (unit.empty()) {
    if (!fraction.empty()) return Invalid(text, "is a fractional byte count");
    return whole;
  }
  for (const auto& [name, multiplier] : kUnits) {
    if (unit != name) continue;
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(whole, multiplier, &bytes)) return Invalid(text, "is too large");
    // fraction * multiplier / 10^digits, truncated; 12 digits keep the product in range.
    uint64_t numerator = 0;
    uint64_t denominator = 1;
    for (char c : fraction) {
      numerator = numerator * 10 + uint64_t(c - '0');
      denominator *= 10;
    }
    unsigned __int128 part = (unsigned __int128)numerator * multiplier / denominator;
    if (__builtin_add_overflow(bytes, (uint64_t)part, &bytes)) return Invalid(text, "is too large");
    return bytes;
  }
  return Invalid(text, absl::StrCat("has an unknown unit '", unit, "' (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"));
}

std::string FormatBytesHuman(uint64_t bytes) {
  constexpr std::array<std::pair<absl::string_view, double>, 4> kScale = {
      {{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}}};
  for (const auto& [unit, scale] : kScale) {
    if (bytes >= scale) return absl::StrFormat("%.2f %s", bytes / scale, unit);
  }
  return absl::StrCat(bytes, " B");
}

}  // namespace modelsmith
