#include "workers/jobs/core/paced_copy.h"

#include <algorithm>

#include "workers/common/error.h"

namespace modelsmith {
namespace {

constexpr uint64_t kCopyPieceBytes = 64 << 20;

}  // namespace

absl::Status StopStatus(const JobContext& context) {
  if (context.stop_requested()) return MakeError(absl::StatusCode::kCancelled, "CANCELLED", "the job was stopped");
  return absl::OkStatus();
}

absl::Status CopyByteRange(const RandomAccessObject& file, uint64_t offset, uint64_t length, ObjectWriter& out,
                           ProgressTracker& tracker, RateLimiter& pace, const JobContext& context) {
  for (uint64_t done = 0; done < length;) {
    if (absl::Status s = StopStatus(context); !s.ok()) return s;
    const uint64_t piece = pace.PieceBytes(std::min(kCopyPieceBytes, length - done));
    if (absl::Status s = out.AppendFrom(file, offset + done, piece); !s.ok()) return s;
    done += piece;
    tracker.AddBytes(piece);
    pace.Account(piece, [&] { return context.stop_requested(); });
  }
  return absl::OkStatus();
}

absl::Status CopyTensorBytes(const TensorInfo& tensor, const RandomAccessObject& file, ObjectWriter& out,
                             ProgressTracker& tracker, RateLimiter& pace, const JobContext& context) {
  return CopyByteRange(file, tensor.data_offset, tensor.size_bytes, out, tracker, pace, context);
}

}  // namespace modelsmith
