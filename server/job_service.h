// JobServiceImpl: modelsmith.v1.JobService on gRPC's callback API, over the JobManager. Each method
// authenticates the caller and checks its role (auth.h), validates its request, translates and
// delegates; no job logic lives here. Submits and cancels leave an audit line. No gRPC thread blocks:
// reads of the job table answer inline, work that may take long (a submit's preflight, inspecting
// a model, a cancel waiting for its job to stop) runs on bounded executors, and WatchJob streams
// are write reactors woken by the manager.
#ifndef MODELSMITH_SERVER_JOB_SERVICE_H_
#define MODELSMITH_SERVER_JOB_SERVICE_H_

#include "modelsmith/v1/job_service.grpc.pb.h"
#include <optional>

#include "server/auth.h"
#include "server/bounded_executor.h"
#include "server/job_manager.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

class JobServiceImpl final : public v1::JobService::CallbackService {
 public:
  // Preflights and inspections run `preflight_threads` at a time, at most 64 pending; cancels run
  // on an executor of their own, so a cancel never waits behind a preflight.
  // `auth` decides who calls and what they may do (auth.h); it must outlive the service.
  JobServiceImpl(JobManager& manager, const StorageRouter& router, Authenticator& auth, size_t preflight_threads = 2);

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* context, const v1::SubmitJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context, const v1::GetJobRequest* request,
                                   v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context, const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context, const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* context,
                                                   const v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* InspectModel(grpc::CallbackServerContext* context, const v1::InspectModelRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  // The caller, who must hold `role` for `what`; else the reactor is finished with the error
  // (and, for a non-empty `audit_action`, an audit line records the refusal).
  std::optional<Principal> Admit(grpc::CallbackServerContext* context, Role role, absl::string_view what,
                                 grpc::ServerUnaryReactor* reactor, absl::string_view audit_action = "",
                                 absl::string_view job_id = "");

  JobManager& manager_;
  const StorageRouter& router_;
  Authenticator& auth_;
  BoundedExecutor preflights_;
  BoundedExecutor cancels_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_JOB_SERVICE_H_
