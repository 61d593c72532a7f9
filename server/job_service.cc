#include "server/job_service.h"

#include "server/rpc_status.h"
#include "workers/common/error.h"
#include "workers/jobs/inspect.h"

namespace modelsmith {
namespace {

absl::Status RequireId(const std::string& id) {
  if (id.empty()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "MISSING_FIELD", "'id' is required", {{"field", "id"}});
  }
  return absl::OkStatus();
}

template <typename T>
grpc::Status Reply(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* request,
                                       v1::Job* response) {
  return Reply(manager_.Submit(request->spec(), request->request_id()), response);
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext*, const v1::GetJobRequest* request, v1::Job* response) {
  if (absl::Status s = RequireId(request->id()); !s.ok()) return ToGrpcStatus(s);
  return Reply(manager_.Get(request->id()), response);
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                                      v1::ListJobsResponse* response) {
  return Reply(manager_.List(*request), response);
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request,
                                       v1::Job* response) {
  if (absl::Status s = RequireId(request->id()); !s.ok()) return ToGrpcStatus(s);
  return Reply(manager_.Cancel(request->id()), response);
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                                      grpc::ServerWriter<v1::JobEvent>* writer) {
  if (absl::Status s = RequireId(request->id()); !s.ok()) return ToGrpcStatus(s);
  absl::Status status = manager_.Watch(
      request->id(), [&](const v1::JobEvent& event) { return writer->Write(event); },
      [&] { return !context->IsCancelled(); });
  if (absl::IsCancelled(status)) return grpc::Status::CANCELLED;
  return ToGrpcStatus(status);
}

grpc::Status JobServiceImpl::InspectModel(grpc::ServerContext*, const v1::InspectModelRequest* request,
                                          v1::ModelInfo* response) {
  if (request->uri().empty()) {
    return ToGrpcStatus(MakeError(absl::StatusCode::kInvalidArgument, "MISSING_FIELD", "'uri' is required",
                                  {{"field", "uri"}}));
  }
  return Reply(modelsmith::InspectModel(router_, request->uri()), response);
}

}  // namespace modelsmith
