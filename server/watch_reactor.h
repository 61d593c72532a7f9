// WatchReactor: one WatchJob stream on gRPC's callback API. It holds no thread while it waits:
// the job manager wakes it when its job has news, it sends one event at a time (back-pressure: a
// slow reader gets progress coalesced, never state changes or warnings dropped) and finishes the
// stream after the job's final event, when the client goes away, or when the server shuts down.
#ifndef MODELSMITH_SERVER_WATCH_REACTOR_H_
#define MODELSMITH_SERVER_WATCH_REACTOR_H_

#include <deque>
#include <memory>
#include <mutex>

#include "grpcpp/grpcpp.h"
#include "modelsmith/v1/job_service.pb.h"
#include "server/job_manager.h"

namespace modelsmith {

class WatchReactor final : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  // Starts watching `id`; an unknown id finishes the stream with NOT_FOUND. Deletes itself in
  // OnDone, as callback reactors do.
  WatchReactor(JobManager& manager, const std::string& id);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // The link the manager's wake function holds: it outlives the reactor and is cut in OnDone.
  struct Link {
    std::mutex mutex;
    WatchReactor* reactor = nullptr;
  };

  // Starts the next write, or finishes the stream when the job has ended and all is sent.
  // Called from gRPC's callback threads and from the job's threads (through the wake function).
  void Pump();
  void FinishOnce(grpc::Status status);  // REQUIRES: mutex_ held and released right after

  std::shared_ptr<Link> link_;
  std::shared_ptr<JobWatch> watch_;
  std::mutex mutex_;
  std::deque<v1::JobEvent> queue_;
  v1::JobEvent writing_event_;  // must live until OnWriteDone
  bool writing_ = false;
  bool watch_done_ = false;
  grpc::Status end_status_;
  bool finished_ = false;
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_WATCH_REACTOR_H_
