// ReflectionGate: gRPC server reflection behind the same authentication as the job service.
//
// gRPC's reflection plugin registers an ordinary service that no hook can refuse with a status of
// ours (a server interceptor can neither fail a call nor stop the handler). So the public server
// does not carry it: reflection runs on a private in-process server, and the public server's
// generic handler (the service for every method no other service claims) authenticates each
// reflection call (role reader), then relays its messages to the private server byte for byte.
// Refusals are the job service's: UNAUTHENTICATED, or PERMISSION_DENIED with ROLE_REQUIRED. Any
// other unclaimed method is UNIMPLEMENTED, as gRPC answers it without a generic handler.
//
// The private server lists the same service names as the public one (reflection's ListServices
// answers from the services registered beside it), with their descriptors from the generated pool;
// it has no listening port, and its job-service registration answers nothing but descriptors.
//
// Linking gRPC's reflection library installs its plugin in every ServerBuilder (a static
// initializer), so each public builder (the main port, the health listener) must be given
// WithoutReflection(); only the gate's private server keeps it.
#ifndef MODELSMITH_SERVER_REFLECTION_GATE_H_
#define MODELSMITH_SERVER_REFLECTION_GATE_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/server_builder_option.h>

#include <memory>

#include "modelsmith/v1/job_service.grpc.pb.h"
#include "server/auth.h"

namespace modelsmith {

// A builder option that drops the reflection plugin from the server being built.
std::unique_ptr<grpc::ServerBuilderOption> WithoutReflection();

class ReflectionGate final : public grpc::CallbackGenericService {
 public:
  // Starts the private reflection server. `auth` must outlive the gate.
  explicit ReflectionGate(Authenticator& auth);
  ~ReflectionGate() override;

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override;

 private:
  Authenticator& auth_;
  v1::JobService::CallbackService descriptors_only_;  // every method UNIMPLEMENTED; never reachable
  std::unique_ptr<grpc::Server> reflection_server_;
  std::unique_ptr<grpc::GenericStub> relay_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_REFLECTION_GATE_H_
