#include "workers/common/error.h"

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace modelsmith {
namespace {

constexpr absl::string_view kReasonUrl = "type.modelsmith.dev/reason";
constexpr absl::string_view kContextUrl = "type.modelsmith.dev/context";

// Context is stored as "key\x1fvalue\x1e" records: neither separator occurs in paths or names
// that pass validation, and the encoding needs no parser.
std::string EncodeContext(const ErrorContext& context) {
  std::string out;
  for (const auto& [key, value] : context) absl::StrAppend(&out, key, "\x1f", value, "\x1e");
  return out;
}

}  // namespace

absl::Status WithReason(absl::Status status, absl::string_view reason, ErrorContext context) {
  if (status.ok()) return status;
  status.SetPayload(kReasonUrl, absl::Cord(reason));
  ErrorContext merged = ContextOf(status);
  for (auto& [key, value] : context) merged[key] = std::move(value);
  if (!merged.empty()) status.SetPayload(kContextUrl, absl::Cord(EncodeContext(merged)));
  return status;
}

absl::Status MakeError(absl::StatusCode code, absl::string_view reason, absl::string_view message,
                       ErrorContext context) {
  return WithReason(absl::Status(code, message), reason, std::move(context));
}

absl::Status FieldError(absl::string_view reason, absl::string_view field, absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, reason, message, {{"field", std::string(field)}});
}

std::string ReasonOf(const absl::Status& status) {
  if (auto payload = status.GetPayload(kReasonUrl)) return std::string(*payload);
  return absl::AsciiStrToUpper(absl::StatusCodeToString(status.code()));
}

ErrorContext ContextOf(const absl::Status& status) {
  ErrorContext context;
  auto payload = status.GetPayload(kContextUrl);
  if (!payload) return context;
  std::string encoded(*payload);
  for (absl::string_view record : absl::StrSplit(encoded, '\x1e', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(record, absl::MaxSplits('\x1f', 1));
    context[kv.first] = kv.second;
  }
  return context;
}

absl::Status Annotate(const absl::Status& status, absl::string_view prefix) {
  if (status.ok()) return status;
  absl::Status annotated(status.code(), absl::StrCat(prefix, ": ", status.message()));
  status.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) { annotated.SetPayload(url, payload); });
  return annotated;
}

}  // namespace modelsmith
