#include "client/remote_commands.h"

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "client/render.h"

namespace modelsmith::cli {
namespace {

std::string ReadFileOrExit(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "modelsmith: %s '%s' cannot be read\n", flag, path.c_str());
    std::exit(2);
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The bearer token, when one is given, on every call.
void Authorize(grpc::ClientContext& context, const RemoteOptions& options) {
  if (!options.token.empty()) context.AddMetadata("authorization", "Bearer " + options.token);
}

std::unique_ptr<v1::JobService::Stub> Connect(const RemoteOptions& options) {
  if (options.tls_ca_file.empty() && options.tls_cert_file.empty()) {
    return v1::JobService::NewStub(grpc::CreateChannel(options.server, grpc::InsecureChannelCredentials()));
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) ssl.pem_root_certs = ReadFileOrExit(options.tls_ca_file, "--tls-ca");
  if (!options.tls_cert_file.empty()) {
    ssl.pem_cert_chain = ReadFileOrExit(options.tls_cert_file, "--tls-cert");
    ssl.pem_private_key = ReadFileOrExit(options.tls_key_file, "--tls-key");
  }
  return v1::JobService::NewStub(grpc::CreateChannel(options.server, grpc::SslCredentials(ssl)));
}

void PrintJobOrJson(const RemoteOptions& options, const v1::Job& job) {
  if (options.json) {
    std::printf("%s\n", ToJson(job, true).c_str());
  } else {
    PrintJob(job, stdout);
  }
}

// Follows a job to its end; returns its final state (UNSPECIFIED if the stream broke).
int Follow(const RemoteOptions& options, v1::JobService::Stub& stub, const std::string& id) {
  grpc::ClientContext context;
  Authorize(context, options);
  v1::WatchJobRequest request;
  request.set_id(id);
  std::unique_ptr<grpc::ClientReader<v1::JobEvent>> stream = stub.WatchJob(&context, request);
  ProgressView view(options.json ? stderr : stdout);
  v1::JobEvent event;
  v1::Job last;
  while (stream->Read(&event)) {
    if (options.json) std::printf("%s\n", ToJson(event, false).c_str());
    if (event.has_job()) {
      const bool first = last.id().empty();
      last = event.job();
      if (first && !options.json) {
        std::printf("state %s (attempt %u)\n", StateName(last.state()).c_str(), last.attempt());
      }
      continue;
    }
    if (!options.json) view.OnEvent(event);
  }
  view.Finish();
  grpc::Status status = stream->Finish();
  if (!status.ok()) return ReportRpcError(status);
  if (!options.json) PrintJob(last, stdout);
  switch (last.state()) {
    case v1::JOB_STATE_SUCCEEDED: return kExitOk;
    case v1::JOB_STATE_FAILED: return IsInvalidInputCode(last.error().code()) ? kExitInvalidInput : kExitFailure;
    default: return kExitFailure;
  }
}

}  // namespace

int SubmitCommand(const RemoteOptions& options, const v1::SubmitJobRequest& request, bool watch) {
  auto stub = Connect(options);
  grpc::ClientContext context;
  Authorize(context, options);
  v1::Job job;
  grpc::Status status = stub->SubmitJob(&context, request, &job);
  if (!status.ok()) return ReportRpcError(status);
  if (!watch) {
    if (options.json) {
      std::printf("%s\n", ToJson(job, true).c_str());
    } else {
      std::printf("%s\n", job.id().c_str());
    }
    return kExitOk;
  }
  if (!options.json) std::printf("submitted %s\n", job.id().c_str());
  return Follow(options, *stub, job.id());
}

int WatchCommand(const RemoteOptions& options, const std::string& id) {
  auto stub = Connect(options);
  return Follow(options, *stub, id);
}

int GetCommand(const RemoteOptions& options, const std::string& id) {
  auto stub = Connect(options);
  grpc::ClientContext context;
  Authorize(context, options);
  v1::GetJobRequest request;
  request.set_id(id);
  v1::Job job;
  grpc::Status status = stub->GetJob(&context, request, &job);
  if (!status.ok()) return ReportRpcError(status);
  PrintJobOrJson(options, job);
  return kExitOk;
}

int ListCommand(const RemoteOptions& options, const v1::ListJobsRequest& first, bool all_pages) {
  auto stub = Connect(options);
  v1::ListJobsRequest request = first;
  if (!options.json) absl::PrintF("%-22s %-10s %-10s %-21s %s\n", "ID", "KIND", "STATE", "CREATED", "PROGRESS");
  while (true) {
    grpc::ClientContext context;
    Authorize(context, options);
    v1::ListJobsResponse response;
    grpc::Status status = stub->ListJobs(&context, request, &response);
    if (!status.ok()) return ReportRpcError(status);
    if (options.json) {
      std::printf("%s\n", ToJson(response, true).c_str());
    } else {
      for (const v1::Job& job : response.jobs()) PrintJobRow(job, stdout);
      if (!all_pages && !response.next_page_token().empty()) {
        absl::PrintF("(more: --page-token %s)\n", response.next_page_token());
      }
    }
    if (!all_pages || response.next_page_token().empty()) return kExitOk;
    request.set_page_token(response.next_page_token());
  }
}

int CancelCommand(const RemoteOptions& options, const std::string& id) {
  auto stub = Connect(options);
  grpc::ClientContext context;
  Authorize(context, options);
  v1::CancelJobRequest request;
  request.set_id(id);
  v1::Job job;
  grpc::Status status = stub->CancelJob(&context, request, &job);
  if (!status.ok()) return ReportRpcError(status);
  PrintJobOrJson(options, job);
  return kExitOk;
}

int InspectCommand(const RemoteOptions& options, const std::string& uri) {
  auto stub = Connect(options);
  grpc::ClientContext context;
  Authorize(context, options);
  v1::InspectModelRequest request;
  request.set_uri(uri);
  v1::ModelInfo model;
  grpc::Status status = stub->InspectModel(&context, request, &model);
  if (!status.ok()) return ReportRpcError(status);
  if (options.json) {
    std::printf("%s\n", ToJson(model, true).c_str());
  } else {
    PrintModel(model, stdout);
  }
  return kExitOk;
}

}  // namespace modelsmith::cli
