#include "workers/jobs/core/rate_limiter.h"

#include <algorithm>
#include <thread>

namespace modelsmith {

RateLimiter::RateLimiter(uint64_t bytes_per_second)
    : bytes_per_second_(bytes_per_second), start_(std::chrono::steady_clock::now()) {}

uint64_t RateLimiter::PieceBytes(uint64_t wanted) const {
  if (bytes_per_second_ == 0) return wanted;
  return std::max<uint64_t>(1, std::min(wanted, bytes_per_second_ / 10));
}

void RateLimiter::Account(uint64_t bytes, const std::function<bool()>& should_stop) {
  if (bytes_per_second_ == 0) return;
  bytes_ += bytes;
  using Clock = std::chrono::steady_clock;
  const Clock::time_point due = start_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                                             static_cast<double>(bytes_) / bytes_per_second_));
  for (Clock::time_point now = Clock::now(); now < due; now = Clock::now()) {
    if (should_stop && should_stop()) return;
    std::this_thread::sleep_for(std::min<Clock::duration>(std::chrono::milliseconds(50), due - now));
  }
}

}  // namespace modelsmith
