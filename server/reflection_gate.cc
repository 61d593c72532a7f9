#include "server/reflection_gate.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <mutex>
#include <vector>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "server/rpc_status.h"

namespace modelsmith {
namespace {

// Both protocol versions; the private server answers the one its gRPC carries and UNIMPLEMENTED
// for the other (clients such as grpcurl fall back from v1 to v1alpha on that).
bool IsReflectionMethod(const std::string& method) {
  return absl::StartsWith(method, "/grpc.reflection.v1alpha.ServerReflection/") ||
         absl::StartsWith(method, "/grpc.reflection.v1.ServerReflection/");
}

class Refusal final : public grpc::ServerGenericBidiReactor {
 public:
  explicit Refusal(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// Relays one admitted reflection stream to the private server: one message in flight each way,
// the caller's next message read only once the previous one was handed on, the upstream's status
// returned as the call's. The caller cancelling cancels the upstream call.
class Relay final : public grpc::ServerGenericBidiReactor {
 public:
  Relay(grpc::GenericStub& stub, const grpc::GenericCallbackServerContext& context) : upstream_(*this) {
    upstream_context_.set_deadline(context.deadline());
    stub.PrepareBidiStreamingCall(&upstream_context_, context.method(), grpc::StubOptions(), &upstream_);
    upstream_.StartRead(&response_);
    upstream_.StartCall();
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    std::lock_guard lock(mutex_);
    if (upstream_done_) return;
    if (ok) {
      upstream_.StartWrite(&request_);
    } else {
      upstream_.StartWritesDone();
    }
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mutex_);
    if (upstream_done_) return;
    if (ok) {
      upstream_.StartRead(&response_);
    } else {
      upstream_context_.TryCancel();  // the caller is gone
    }
  }

  void OnCancel() override { upstream_context_.TryCancel(); }

  void OnDone() override { delete this; }

 private:
  class Upstream final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Upstream(Relay& relay) : relay_(relay) {}
    void OnWriteDone(bool ok) override {
      if (ok) relay_.StartRead(&relay_.request_);
    }
    void OnReadDone(bool ok) override {
      if (ok) relay_.StartWrite(&relay_.response_);
    }
    void OnDone(const grpc::Status& status) override {
      {
        std::lock_guard lock(relay_.mutex_);
        relay_.upstream_done_ = true;
      }
      relay_.Finish(status);  // last: the relay may be deleted once it returns
    }

   private:
    Relay& relay_;
  };

  std::mutex mutex_;
  bool upstream_done_ = false;
  grpc::ClientContext upstream_context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  Upstream upstream_;
};

class DropReflectionPlugin final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [](const std::unique_ptr<grpc::ServerBuilderPlugin>& plugin) {
      return absl::StrContains(plugin->name(), "reflection");  // "proto_server_reflection"
    });
  }
};

}  // namespace

std::unique_ptr<grpc::ServerBuilderOption> WithoutReflection() { return std::make_unique<DropReflectionPlugin>(); }

ReflectionGate::ReflectionGate(Authenticator& auth) : auth_(auth) {
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.RegisterService(&descriptors_only_);
  reflection_server_ = builder.BuildAndStart();
  relay_ = std::make_unique<grpc::GenericStub>(reflection_server_->InProcessChannel(grpc::ChannelArguments()));
}

ReflectionGate::~ReflectionGate() { reflection_server_->Shutdown(); }

grpc::ServerGenericBidiReactor* ReflectionGate::CreateReactor(grpc::GenericCallbackServerContext* context) {
  if (!IsReflectionMethod(context->method())) {
    return new Refusal(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, ""));
  }
  absl::StatusOr<Principal> principal = auth_.Authenticate(*context);
  absl::Status allowed =
      principal.ok() ? Authenticator::Require(*principal, Role::kReader, "reflection") : principal.status();
  if (!allowed.ok()) return new Refusal(ToGrpcStatus(allowed));
  return new Relay(*relay_, *context);
}

}  // namespace modelsmith
