#include "server/job_service.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "server/logging.h"
#include "server/rpc_status.h"
#include "server/watch_reactor.h"
#include "workers/common/error.h"
#include "workers/jobs/inspect/inspect.h"

namespace modelsmith {
namespace {

constexpr size_t kMaxPendingPreflights = 64;
constexpr size_t kCancelThreads = 2;
constexpr size_t kMaxPendingCancels = 256;

absl::Status RequireId(const std::string& id) {
  if (id.empty()) return FieldError("MISSING_FIELD", "id", "'id' is required");
  return absl::OkStatus();
}

// Finishes `reactor` with `result`, moved into `response` when it holds a value.
template <typename T>
void Reply(grpc::ServerUnaryReactor* reactor, absl::StatusOr<T> result, T* response) {
  if (!result.ok()) {
    reactor->Finish(ToGrpcStatus(result.status()));
    return;
  }
  *response = *std::move(result);
  reactor->Finish(grpc::Status::OK);
}

absl::Status Busy(absl::string_view what) {
  return MakeError(absl::StatusCode::kResourceExhausted, "SERVER_BUSY",
                   absl::StrCat("too many ", what, " are in progress; try again shortly"));
}

// Whether the caller still waits for the answer: not cancelled, deadline not passed.
bool CallerWaiting(grpc::CallbackServerContext* context) {
  return !context->IsCancelled() && context->deadline() > std::chrono::system_clock::now();
}

}  // namespace

JobServiceImpl::JobServiceImpl(JobManager& manager, const StorageRouter& router, Authenticator& auth,
                               size_t preflight_threads)
    : manager_(manager),
      router_(router),
      auth_(auth),
      preflights_(preflight_threads, kMaxPendingPreflights),
      cancels_(kCancelThreads, kMaxPendingCancels) {}

std::optional<Principal> JobServiceImpl::Admit(grpc::CallbackServerContext* context, Role role, absl::string_view what,
                                               grpc::ServerUnaryReactor* reactor, absl::string_view audit_action,
                                               absl::string_view job_id) {
  absl::StatusOr<Principal> principal = auth_.Authenticate(*context);
  absl::Status allowed = principal.ok() ? Authenticator::Require(*principal, role, what) : principal.status();
  if (!allowed.ok()) {
    if (!audit_action.empty()) {
      LogAudit(audit_action, principal.ok() ? principal->name : "-", context->peer(), job_id, ReasonOf(allowed));
    }
    reactor->Finish(ToGrpcStatus(allowed));
    return std::nullopt;
  }
  return *principal;
}

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(grpc::CallbackServerContext* context,
                                                    const v1::SubmitJobRequest* request, v1::Job* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> principal = Admit(context, Role::kSubmitter, "SubmitJob", reactor, "submit", "");
  if (!principal) return reactor;
  bool posted = preflights_.TryPost([this, context, request, response, reactor, principal = *principal] {
    if (!CallerWaiting(context)) {  // gave up while queued: nothing to do, nobody to tell
      LogAudit("submit", principal.name, principal.peer, "", "CALLER_GONE");
      reactor->Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the caller gave up before the submit ran"));
      return;
    }
    absl::StatusOr<v1::Job> job = manager_.Submit(
        request->spec(), request->request_id(), [context] { return CallerWaiting(context); }, principal.name);
    LogAudit("submit", principal.name, principal.peer, job.ok() ? job->id() : "",
             job.ok() ? "OK" : ReasonOf(job.status()));
    Reply(reactor, std::move(job), response);
  });
  if (!posted) {
    LogAudit("submit", principal->name, principal->peer, "", "SERVER_BUSY");
    reactor->Finish(ToGrpcStatus(Busy("submits")));
  }
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
                                                 v1::Job* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!Admit(context, Role::kReader, "GetJob", reactor)) return reactor;
  if (absl::Status s = RequireId(request->id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  Reply(reactor, manager_.Get(request->id()), response);
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                   const v1::ListJobsRequest* request, v1::ListJobsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!Admit(context, Role::kReader, "ListJobs", reactor)) return reactor;
  Reply(reactor, manager_.List(*request), response);
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                    const v1::CancelJobRequest* request, v1::Job* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<Principal> principal = Admit(context, Role::kSubmitter, "CancelJob", reactor, "cancel", request->id());
  if (!principal) return reactor;
  if (absl::Status s = RequireId(request->id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  // A running job's cancel waits (a few seconds at most) for it to stop: off the callback threads.
  bool posted = cancels_.TryPost([this, request, response, reactor, principal = *principal] {
    // A submitter cancels its own jobs; another principal's needs admin.
    absl::StatusOr<v1::Job> result = manager_.Get(request->id());
    if (result.ok() && result->owner() != principal.name) {
      if (absl::Status s = Authenticator::Require(principal, Role::kAdmin, "cancelling another principal's job");
          !s.ok()) {
        result = s;
      }
    }
    if (result.ok()) result = manager_.Cancel(request->id());
    LogAudit("cancel", principal.name, principal.peer, request->id(), result.ok() ? "OK" : ReasonOf(result.status()));
    Reply(reactor, std::move(result), response);
  });
  if (!posted) reactor->Finish(ToGrpcStatus(Busy("cancels")));
  return reactor;
}

grpc::ServerWriteReactor<v1::JobEvent>* JobServiceImpl::WatchJob(grpc::CallbackServerContext* context,
                                                                 const v1::WatchJobRequest* request) {
  struct Refused final : grpc::ServerWriteReactor<v1::JobEvent> {
    explicit Refused(const absl::Status& s) { Finish(ToGrpcStatus(s)); }
    void OnDone() override { delete this; }
  };
  absl::StatusOr<Principal> principal = auth_.Authenticate(*context);
  absl::Status allowed =
      principal.ok() ? Authenticator::Require(*principal, Role::kReader, "WatchJob") : principal.status();
  if (!allowed.ok()) return new Refused(allowed);
  if (absl::Status s = RequireId(request->id()); !s.ok()) return new Refused(s);
  return new WatchReactor(manager_, request->id());
}

grpc::ServerUnaryReactor* JobServiceImpl::InspectModel(grpc::CallbackServerContext* context,
                                                       const v1::InspectModelRequest* request,
                                                       v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!Admit(context, Role::kReader, "InspectModel", reactor)) return reactor;
  if (request->uri().empty()) {
    reactor->Finish(ToGrpcStatus(FieldError("MISSING_FIELD", "uri", "'uri' is required")));
    return reactor;
  }
  bool posted = preflights_.TryPost([this, request, response, reactor] {
    absl::StatusOr<v1::ModelInfo> info;
    try {
      info = modelsmith::InspectModel(router_, request->uri());
    } catch (const std::exception& e) {  // a hostile file must cost this call, never the server
      info = MakeError(absl::StatusCode::kInternal, "INTERNAL",
                       absl::StrCat("inspecting failed unexpectedly: ", e.what()));
    }
    Reply(reactor, std::move(info), response);
  });
  if (!posted) reactor->Finish(ToGrpcStatus(Busy("inspections")));
  return reactor;
}

}  // namespace modelsmith
