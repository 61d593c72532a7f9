// JobServiceImpl: modelsmith.v1.JobService over the JobManager. Each method validates its
// request, translates and delegates; no job logic lives here.
#ifndef MODELSMITH_SERVER_JOB_SERVICE_H_
#define MODELSMITH_SERVER_JOB_SERVICE_H_

#include "modelsmith/v1/job_service.grpc.pb.h"
#include "server/job_manager.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(JobManager& manager, const StorageRouter& router)
      : manager_(manager), router_(router) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* request,
                         v1::Job* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override;
  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status InspectModel(grpc::ServerContext* context, const v1::InspectModelRequest* request,
                            v1::ModelInfo* response) override;

 private:
  JobManager& manager_;
  const StorageRouter& router_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_JOB_SERVICE_H_
