// The wall clock as a protobuf Timestamp, to the nanosecond the system clock gives.
// Not TimeUtil::GetCurrentTime: the protobuf in Debian 12 (3.21) implements it with time(nullptr),
// whole seconds, which makes every job's create/start/end times and durations coarse.
#ifndef MODELSMITH_SERVER_CLOCK_H_
#define MODELSMITH_SERVER_CLOCK_H_

#include <chrono>

#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/time_util.h"

namespace modelsmith {

inline google::protobuf::Timestamp NowTimestamp() {
  const auto since_epoch = std::chrono::system_clock::now().time_since_epoch();
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
      std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch).count());
}

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_CLOCK_H_
