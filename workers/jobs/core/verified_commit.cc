#include "workers/jobs/core/verified_commit.h"

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/storage/checksum.h"

namespace modelsmith {

absl::StatusOr<v1::Artifact> VerifyAndCommit(PipelinedWriter& out, ObjectStore& store, const std::string& uri,
                                             uint64_t size_bytes, absl::string_view role, const ObjectChecker& check,
                                             ProgressTracker& tracker, const JobContext& context) {
  tracker.SetPhase("verify");
  std::string digest;
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> readback = out.ReadBack();
  if (readback.ok()) {
    if ((*readback)->size_bytes() != size_bytes) {
      return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                       absl::StrCat("'", uri, "' has ", (*readback)->size_bytes(), " bytes, planned ", size_bytes));
    }
    if (absl::Status s = check(**readback); !s.ok()) return s;
    absl::StatusOr<std::string> streamed = out.ReadBackDigest();
    absl::StatusOr<std::string> hashed = streamed.ok() || !absl::IsUnimplemented(streamed.status())
                                             ? streamed
                                             : Sha256Hex(**readback, nullptr, [&] { return context.stop_requested(); });
    if (!hashed.ok()) return absl::IsCancelled(hashed.status()) ? StopStatus(context) : hashed.status();
    digest = *hashed;
  } else if (!absl::IsUnimplemented(readback.status())) {
    return readback.status();
  }
  if (absl::Status s = StopStatus(context); !s.ok()) return s;

  tracker.SetPhase("publish");
  if (absl::Status s = out.Commit(); !s.ok()) return s;
  if (digest.empty()) {  // the store verifies after commit
    absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(uri);
    absl::Status checked = object.ok() ? check(**object) : object.status();
    absl::StatusOr<std::string> hashed =
        checked.ok() ? Sha256Hex(**object, nullptr, [&] { return context.stop_requested(); }) : checked;
    if (!hashed.ok()) {
      store.Delete(uri).IgnoreError();
      return hashed.status();
    }
    digest = *hashed;
  }
  v1::Artifact artifact;
  artifact.set_uri(uri);
  artifact.set_size_bytes(size_bytes);
  artifact.set_sha256(digest);
  artifact.set_role(std::string(role));
  return artifact;
}

absl::StatusOr<v1::Artifact> WriteVerifiedObject(ObjectStore& store, const std::string& uri, absl::string_view role,
                                                 const ObjectProducer& produce, ProgressTracker& tracker, const JobContext& context) {
  constexpr uint64_t kQueuedWriteBytes = 32 << 20;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = store.OpenForWrite(uri);
  if (!writer.ok()) return writer.status();
  PipelinedWriter out(*std::move(writer), kQueuedWriteBytes, PipelinedWriter::ReadBackCheck::kCompare);
  absl::StatusOr<WrittenObject> written = produce(out);
  absl::StatusOr<v1::Artifact> artifact =
      written.ok() ? VerifyAndCommit(out, store, uri, written->size_bytes, role, written->check, tracker, context) : written.status();
  if (!artifact.ok()) out.Abort();
  return artifact;
}

}  // namespace modelsmith
