#include "workers/formats/tensor_name.h"

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {

absl::Status CheckTensorNameLength(absl::string_view name, absl::string_view file) {
  if (name.size() <= kMaxTensorNameBytes) return absl::OkStatus();
  const std::string start(name.substr(0, 64));
  return MakeError(absl::StatusCode::kInvalidArgument, "TENSOR_NAME_TOO_LONG",
                   absl::StrCat("'", file, "' names a tensor with ", name.size(), " bytes ('", start, "...'); at most ",
                                kMaxTensorNameBytes, " are allowed"),
                   {{"file", std::string(file)}, {"tensor", start}});
}

}  // namespace modelsmith
