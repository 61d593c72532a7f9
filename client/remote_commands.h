// The CLI commands that talk to a modelsmithd over gRPC. Each returns the process exit code
// (render.h: 0 success, 1 failure, 2 invalid input).
#ifndef MODELSMITH_CLIENT_REMOTE_COMMANDS_H_
#define MODELSMITH_CLIENT_REMOTE_COMMANDS_H_

#include <string>

#include "modelsmith/v1/job_service.grpc.pb.h"

namespace modelsmith::cli {

struct RemoteOptions {
  std::string server = "127.0.0.1:50051";
  bool json = false;
  // TLS: a CA bundle to verify the server with (turns TLS on), and a client certificate and key
  // for a server that requires them (mutual TLS). PEM files.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // A bearer token sent with every call (from --token-file or MODELSMITH_TOKEN).
  std::string token;
};

// Submits and, with `watch`, follows the job: then 0 only if it succeeded.
int SubmitCommand(const RemoteOptions& options, const v1::SubmitJobRequest& request, bool watch);
int WatchCommand(const RemoteOptions& options, const std::string& id);
int GetCommand(const RemoteOptions& options, const std::string& id);
int ListCommand(const RemoteOptions& options, const v1::ListJobsRequest& request, bool all_pages);
int CancelCommand(const RemoteOptions& options, const std::string& id);
int InspectCommand(const RemoteOptions& options, const std::string& uri);

}  // namespace modelsmith::cli

#endif  // MODELSMITH_CLIENT_REMOTE_COMMANDS_H_
