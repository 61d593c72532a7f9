// `modelsmith run --spec job.json`: one job in this process with the same engine as the server,
// and no server. The entry point of Kubernetes batch Jobs. Exit 0 on success, 2 on invalid input,
// 1 on any other failure; SIGTERM/SIGINT stop the job cleanly (nothing partial stays) with 1.
#ifndef MODELSMITH_CLIENT_RUN_COMMAND_H_
#define MODELSMITH_CLIENT_RUN_COMMAND_H_

#include <string>

namespace modelsmith::cli {

// `spec_path`: a JSON modelsmith.v1.JobSpec (proto3 JSON mapping), or "-" for stdin.
int RunCommand(const std::string& spec_path, bool json);

}  // namespace modelsmith::cli

#endif  // MODELSMITH_CLIENT_RUN_COMMAND_H_
