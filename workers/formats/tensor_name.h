// The limit every reader puts on tensor names from a file. Names come from untrusted files and
// travel everywhere (plans, messages, manifests, pattern matches), so a reader refuses a name
// longer than any real checkpoint uses before anything else sees it.
#ifndef MODELSMITH_WORKERS_FORMATS_TENSOR_NAME_H_
#define MODELSMITH_WORKERS_FORMATS_TENSOR_NAME_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace modelsmith {

inline constexpr size_t kMaxTensorNameBytes = 4096;

// INVALID_ARGUMENT, reason TENSOR_NAME_TOO_LONG, naming `file` (and the name's first 64 bytes)
// when `name` is longer than kMaxTensorNameBytes; OK otherwise.
absl::Status CheckTensorNameLength(absl::string_view name, absl::string_view file);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_TENSOR_NAME_H_
