// Helpers for talking to a test server: a stub, spec builders, waits, and error decoding.
#ifndef MODELSMITH_TESTS_SUPPORT_JOB_CLIENT_H_
#define MODELSMITH_TESTS_SUPPORT_JOB_CLIENT_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "modelsmith/v1/job_service.grpc.pb.h"

namespace modelsmith::testing {

inline std::unique_ptr<v1::JobService::Stub> Connect(const std::string& address) {
  return v1::JobService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

inline v1::SubmitJobRequest ShardRequest(const std::string& input, const std::string& output,
                                         const std::string& max_size, const std::string& request_id = "") {
  v1::SubmitJobRequest request;
  v1::ShardSpec* spec = request.mutable_spec()->mutable_shard();
  spec->set_input(input);
  spec->set_output(output);
  spec->set_max_shard_size(max_size);
  request.set_request_id(request_id);
  return request;
}

inline grpc::Status Submit(v1::JobService::Stub& stub, const v1::SubmitJobRequest& request, v1::Job* job) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  return stub.SubmitJob(&context, request, job);
}

inline grpc::Status Inspect(v1::JobService::Stub& stub, const std::string& uri, v1::ModelInfo* info) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::InspectModelRequest request;
  request.set_uri(uri);
  return stub.InspectModel(&context, request, info);
}

inline v1::Job GetJob(v1::JobService::Stub& stub, const std::string& id) {
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_id(id);
  v1::Job job;
  grpc::Status status = stub.GetJob(&context, request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job;
}

// Polls until `done(job)` or the timeout; returns the last job seen.
template <typename Predicate>
v1::Job WaitFor(v1::JobService::Stub& stub, const std::string& id, Predicate done,
                std::chrono::seconds timeout = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  v1::Job job;
  while (std::chrono::steady_clock::now() < deadline) {
    job = GetJob(stub, id);
    if (done(job)) return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "timed out waiting on job " << id << " (state " << v1::JobState_Name(job.state()) << ")";
  return job;
}

inline bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED || state == v1::JOB_STATE_CANCELLED;
}

inline v1::Job WaitForEnd(v1::JobService::Stub& stub, const std::string& id) {
  return WaitFor(stub, id, [](const v1::Job& j) { return IsTerminal(j.state()); });
}

// Reads a whole WatchJob stream.
inline std::vector<v1::JobEvent> WatchAll(v1::JobService::Stub& stub, const std::string& id,
                                          grpc::Status* status = nullptr) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  v1::WatchJobRequest request;
  request.set_id(id);
  auto reader = stub.WatchJob(&context, request);
  std::vector<v1::JobEvent> events;
  v1::JobEvent event;
  while (reader->Read(&event)) events.push_back(event);
  grpc::Status finished = reader->Finish();
  if (status != nullptr) *status = finished;
  return events;
}

// What an event stream said about progress: how many progress events, the last byte count,
// whether the counts never went down, and whether the job ended in `final_state`.
struct EventSummary {
  uint64_t progress_events = 0;
  uint64_t last_bytes_done = 0;
  bool monotonic = true;
  bool reached_final_state = false;
};

inline EventSummary Summarize(const std::vector<v1::JobEvent>& events, v1::JobState final_state) {
  EventSummary summary;
  for (const v1::JobEvent& e : events) {
    if (e.has_progress()) {
      summary.monotonic &= e.progress().bytes_done() >= summary.last_bytes_done;
      summary.last_bytes_done = e.progress().bytes_done();
      ++summary.progress_events;
    }
    summary.reached_final_state |= e.has_state_change() && e.state_change().state() == final_state;
  }
  return summary;
}

// The ErrorInfo in a failed call's details.
inline google::rpc::ErrorInfo ErrorInfoOf(const grpc::Status& status) {
  google::rpc::Status rich;
  google::rpc::ErrorInfo info;
  if (rich.ParseFromString(status.error_details())) {
    for (const auto& any : rich.details()) {
      if (any.UnpackTo(&info)) break;
    }
  }
  return info;
}

// Cancels job `id` once it has read more than `after_bytes`, then waits for it to end; returns
// its final state.
inline v1::JobState CancelOnceUnderWay(v1::JobService::Stub& stub, const std::string& id, uint64_t after_bytes = 0) {
  WaitFor(stub, id, [&](const v1::Job& j) { return j.progress().bytes_done() > after_bytes; });
  grpc::ClientContext context;
  v1::CancelJobRequest cancel;
  cancel.set_id(id);
  v1::Job after;
  const grpc::Status status = stub.CancelJob(&context, cancel, &after);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return WaitForEnd(stub, id).state();
}

}  // namespace modelsmith::testing

#endif  // MODELSMITH_TESTS_SUPPORT_JOB_CLIENT_H_
