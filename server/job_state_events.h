// What the manager records when a job changes state, shared by its two source files
// (job_manager.cc: submit, run, cancel, watch; job_claims.cc: claims and leases).
#ifndef MODELSMITH_SERVER_JOB_STATE_EVENTS_H_
#define MODELSMITH_SERVER_JOB_STATE_EVENTS_H_

#include <string>

#include "absl/status/status.h"
#include "modelsmith/v1/job_service.pb.h"

namespace modelsmith {

inline bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED;
}

// The event a state change of `job` (its state, attempt and error now) makes, with `message`.
v1::JobEvent StateEvent(const v1::Job& job, std::string message);

// A status as the job's error: its code, reason and message.
v1::JobError ErrorOf(const absl::Status& status);

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_JOB_STATE_EVENTS_H_
