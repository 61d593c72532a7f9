#include "server/job_service.h"

#include <chrono>

#include "absl/strings/str_cat.h"
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

grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
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

JobServiceImpl::JobServiceImpl(JobManager& manager, const StorageRouter& router, size_t preflight_threads)
    : manager_(manager),
      router_(router),
      preflights_(preflight_threads, kMaxPendingPreflights),
      cancels_(kCancelThreads, kMaxPendingCancels) {}

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(grpc::CallbackServerContext* context,
                                                    const v1::SubmitJobRequest* request, v1::Job* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  bool posted = preflights_.TryPost([this, context, request, response, reactor] {
    if (!CallerWaiting(context)) {  // gave up while queued: nothing to do, nobody to tell
      reactor->Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the caller gave up before the submit ran"));
      return;
    }
    Reply(reactor,
          manager_.Submit(request->spec(), request->request_id(), [context] { return CallerWaiting(context); }),
          response);
  });
  if (!posted) reactor->Finish(ToGrpcStatus(Busy("submits")));
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
                                                 v1::Job* response) {
  if (absl::Status s = RequireId(request->id()); !s.ok()) return Refuse(context, s);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Reply(reactor, manager_.Get(request->id()), response);
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                   const v1::ListJobsRequest* request, v1::ListJobsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Reply(reactor, manager_.List(*request), response);
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                    const v1::CancelJobRequest* request, v1::Job* response) {
  if (absl::Status s = RequireId(request->id()); !s.ok()) return Refuse(context, s);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // A running job's cancel waits (a few seconds at most) for it to stop: off the callback threads.
  bool posted = cancels_.TryPost(
      [this, request, response, reactor] { Reply(reactor, manager_.Cancel(request->id()), response); });
  if (!posted) reactor->Finish(ToGrpcStatus(Busy("cancels")));
  return reactor;
}

grpc::ServerWriteReactor<v1::JobEvent>* JobServiceImpl::WatchJob(grpc::CallbackServerContext* context,
                                                                 const v1::WatchJobRequest* request) {
  if (absl::Status s = RequireId(request->id()); !s.ok()) {
    struct Refused final : grpc::ServerWriteReactor<v1::JobEvent> {
      explicit Refused(const absl::Status& s) { Finish(ToGrpcStatus(s)); }
      void OnDone() override { delete this; }
    };
    return new Refused(s);
  }
  return new WatchReactor(manager_, request->id());
}

grpc::ServerUnaryReactor* JobServiceImpl::InspectModel(grpc::CallbackServerContext* context,
                                                       const v1::InspectModelRequest* request,
                                                       v1::ModelInfo* response) {
  if (request->uri().empty()) return Refuse(context, FieldError("MISSING_FIELD", "uri", "'uri' is required"));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
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
