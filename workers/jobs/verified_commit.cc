#include "workers/jobs/verified_commit.h"

#include "workers/jobs/quantize_report.h"

namespace modelsmith {

absl::StatusOr<v1::Artifact> VerifyAndCommit(ObjectWriter& out, ObjectStore& store, const std::string& uri,
                                             uint64_t size_bytes, absl::string_view role, const ObjectVerifier& verify,
                                             ProgressTracker& tracker, const JobContext& context) {
  tracker.SetPhase("verify");
  std::string digest;
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> readback = out.ReadBack();
  if (readback.ok()) {
    absl::StatusOr<std::string> verified = verify(**readback);
    if (!verified.ok()) return absl::IsCancelled(verified.status()) ? StopStatus(context) : verified.status();
    digest = *verified;
  } else if (!absl::IsUnimplemented(readback.status())) {
    return readback.status();
  }
  if (absl::Status s = StopStatus(context); !s.ok()) return s;

  tracker.SetPhase("publish");
  if (absl::Status s = out.Commit(); !s.ok()) return s;
  if (digest.empty()) {  // the store verifies after commit
    absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(uri);
    absl::StatusOr<std::string> verified = object.ok() ? verify(**object) : object.status();
    if (!verified.ok()) {
      store.Delete(uri).IgnoreError();
      return verified.status();
    }
    digest = *verified;
  }
  v1::Artifact artifact;
  artifact.set_uri(uri);
  artifact.set_size_bytes(size_bytes);
  artifact.set_sha256(digest);
  artifact.set_role(std::string(role));
  return artifact;
}

}  // namespace modelsmith
