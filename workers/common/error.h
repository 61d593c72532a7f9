// Errors are absl::Status values; this file attaches the two things the RPC edge needs beyond
// the canonical code and message: a stable UPPER_SNAKE reason ("SAFETENSORS_INVALID_OFFSETS")
// and context ("file", "tensor", "field" -> value). Both travel as Status payloads, so any layer
// can add them and the gRPC edge turns them into a google.rpc.ErrorInfo.
#ifndef MODELSMITH_WORKERS_COMMON_ERROR_H_
#define MODELSMITH_WORKERS_COMMON_ERROR_H_

#include "absl/strings/string_view.h"
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"

namespace modelsmith {

using ErrorContext = std::map<std::string, std::string>;

// Returns `status` with `reason` attached (replacing any earlier reason) and `context` merged.
absl::Status WithReason(absl::Status status, absl::string_view reason, ErrorContext context = {});

// Builds a status with code, reason, message and context in one call.
absl::Status MakeError(absl::StatusCode code, absl::string_view reason, absl::string_view message,
                       ErrorContext context = {});

// INVALID_ARGUMENT with `reason` and, as context, the spec field at fault ("quantize.output"): the
// one way every layer reports a bad field of a job spec or request.
absl::Status FieldError(absl::string_view reason, absl::string_view field, absl::string_view message);

// The attached reason, or a default derived from the code ("INVALID_ARGUMENT") when none is.
std::string ReasonOf(const absl::Status& status);

// The attached context (empty when none).
ErrorContext ContextOf(const absl::Status& status);

// Prepends "prefix: " to the message, keeping code, reason and context.
absl::Status Annotate(const absl::Status& status, absl::string_view prefix);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_COMMON_ERROR_H_
