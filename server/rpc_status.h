// The RPC edge's error translation: absl::Status -> grpc::Status with the same canonical code
// and message, plus a google.rpc.Status in the `grpc-status-details-bin` trailer whose details
// hold one google.rpc.ErrorInfo {reason, domain "modelsmith.dev", metadata = the context}.
#ifndef MODELSMITH_SERVER_RPC_STATUS_H_
#define MODELSMITH_SERVER_RPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace modelsmith {

inline constexpr char kErrorDomain[] = "modelsmith.dev";

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_RPC_STATUS_H_
