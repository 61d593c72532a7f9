// The typed lifecycle every job kind implements, and the adapters the registry (job_kinds.cc)
// builds its rows from. A kind is a class with three static functions and two types:
//
//   Options  the spec parsed once: sizes as numbers, patterns compiled, enums checked, the
//            fields the kind uses. No I/O.
//   Plan     the input opened once, every output file decided, `estimated_peak_bytes` set.
//
//   static absl::StatusOr<Options> Parse(const v1::JobSpec& spec);
//       INVALID_ARGUMENT naming the spec field (FieldError) for a bad spec.
//   static absl::StatusOr<Plan> MakePlan(const Options& options, const PlanEnv& env);
//       Opens the input and checks the output (vacant unless overwrite or a rerun; paths inside
//       the roots); the errors of the input's reader, with the field attached.
//   static absl::StatusOr<v1::JobResult> Produce(Plan& plan, const JobRun& run, JobContext& context);
//       Writes through a Publication (publication.h); CANCELLED once the context asks to stop.
//
// Preflight at submit and the run share these: the submit keeps the plan's estimate (it is the
// job's admission size), and the run parses and plans again, because it may run in another
// process, later, after the input changed.
#ifndef MODELSMITH_WORKERS_JOBS_CORE_JOB_KIND_H_
#define MODELSMITH_WORKERS_JOBS_CORE_JOB_KIND_H_

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/core/job_context.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

// What planning may use beyond the options.
struct PlanEnv {
  const StorageRouter& router;
  // The job's attempt: a rerun (attempt > 1) may find its own leftovers in the output.
  uint32_t attempt = 1;
};

template <typename Kind>
absl::Status ValidateKind(const v1::JobSpec& spec) {
  return Kind::Parse(spec).status();
}

// `after_parse` (optional) runs between Parse and MakePlan: the server's checks that need a valid
// spec but no I/O of the kind's (the output not held by another job); its error is returned.
template <typename Kind>
absl::StatusOr<uint64_t> PreflightKind(const v1::JobSpec& spec, const StorageRouter& router,
                                       const std::function<absl::Status()>& after_parse) {
  absl::StatusOr<typename Kind::Options> options = Kind::Parse(spec);
  if (!options.ok()) return options.status();
  if (after_parse) {
    if (absl::Status s = after_parse(); !s.ok()) return s;
  }
  absl::StatusOr<typename Kind::Plan> plan = Kind::MakePlan(*options, PlanEnv{router, 1});
  if (!plan.ok()) return plan.status();
  return plan->estimated_peak_bytes;
}

template <typename Kind>
absl::StatusOr<v1::JobResult> RunKind(const JobRun& run, JobContext& context) {
  absl::StatusOr<typename Kind::Options> options = Kind::Parse(run.spec);
  if (!options.ok()) return options.status();
  absl::StatusOr<typename Kind::Plan> plan = Kind::MakePlan(*options, PlanEnv{*run.router, run.attempt});
  if (!plan.ok()) return plan.status();
  return Kind::Produce(*plan, run, context);
}

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CORE_JOB_KIND_H_
