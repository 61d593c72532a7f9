// How the CLI shows jobs, events and errors to people (and as JSON to scripts).
#ifndef MODELSMITH_CLIENT_RENDER_H_
#define MODELSMITH_CLIENT_RENDER_H_

#include <grpcpp/support/status.h>

#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "modelsmith/v1/job.pb.h"
#include "modelsmith/v1/job_service.pb.h"
#include "modelsmith/v1/model.pb.h"

namespace modelsmith::cli {

// Exit codes shared by every command: 0 success, 1 failure, 2 invalid input.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitInvalidInput = 2;

// Codes that mean the request or its inputs were at fault rather than the service.
bool IsInvalidInputCode(int canonical_code);

// One JSON object per message (proto3 JSON mapping, field names as in the .proto).
std::string ToJson(const google::protobuf::Message& message, bool multiline);

std::string StateName(v1::JobState state);  // "SUCCEEDED"
std::string HumanBytes(double bytes);       // "1.50 GB"
std::string HumanDuration(double seconds);  // "1m 05s"

void PrintJob(const v1::Job& job, FILE* out);
void PrintJobRow(const v1::Job& job, FILE* out);
void PrintModel(const v1::ModelInfo& model, FILE* out);

// Prints "error: CODE (REASON, key=value): message" to stderr, decoding the ErrorInfo detail.
// Returns the exit code the error deserves.
int ReportRpcError(const grpc::Status& status);
int ReportError(const absl::Status& status);

// Shows a job's progress: a redrawn bar on a terminal, plain lines (at most one progress line
// every 2 s) otherwise.
class ProgressView {
 public:
  explicit ProgressView(FILE* out);
  ~ProgressView();
  void OnEvent(const v1::JobEvent& event);
  // Ends a bar line, if one is drawn.
  void Finish();

 private:
  void DrawBar(const v1::Progress& progress);
  FILE* out_;
  bool terminal_;
  bool bar_drawn_ = false;
  double last_plain_line_ = 0;
};

}  // namespace modelsmith::cli

#endif  // MODELSMITH_CLIENT_RENDER_H_
