// Publication: the one way every job kind makes its output visible.
//
//  1. Open. The output (a directory or prefix, or one file with its named siblings) must be
//     vacant unless the spec says overwrite or this is a rerun of the same job (attempt > 1),
//     whose leftovers are its own. Staging leftovers of writers that never committed (a killed
//     process) are removed. Nothing else is touched: a previous output stays whole, manifest and
//     all, while the job runs.
//  2. Stage. Each artifact is written under a staging name (invisible), verified where the store
//     can read back before a commit (re-opened, checked by the kind's checker, SHA-256 of what the
//     object holds), and held uncommitted.
//  3. Publish. After the last artifact every staged one is committed in the order it was staged
//     (a rename on local disk), those the store can only read after a commit (S3) are checked and
//     hashed then, the manifest is written last (replacing the previous one), and the previous
//     manifest's artifacts the new one does not list are removed.
//
// A job that fails or is cancelled before Publish leaves the location as it found it: every
// staged writer is aborted (the destructor does it). Right before the first commit and right
// before the manifest, the run confirms it still owns the job (JobContext::ConfirmStillOwner: a
// server's lease); a run that lost the job commits nothing more and removes nothing it committed,
// which is the new owner's to replace. A failure inside Publish removes what it had
// committed and the previous manifest too, so the location is never "complete" (its manifest is
// there) while it mixes old and new files. A stop request is honoured up to the first commit.
//
// Not thread-safe: one job drives its publication from one thread.
#ifndef MODELSMITH_WORKERS_JOBS_CORE_PUBLICATION_H_
#define MODELSMITH_WORKERS_JOBS_CORE_PUBLICATION_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "modelsmith/v1/job.pb.h"
#include "nlohmann/json.hpp"
#include "workers/formats/model_view.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/storage/object_store.h"
#include "workers/storage/pipelined_writer.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

// Checks a written object (headers, tensor tables, sizes) against what the job planned.
using ObjectChecker = std::function<absl::Status(const RandomAccessObject&)>;

// What a producer wrote: the planned size of the object and what it must satisfy.
struct WrittenObject {
  uint64_t size_bytes = 0;
  ObjectChecker check;
};
using ObjectProducer = std::function<absl::StatusOr<WrittenObject>(PipelinedWriter&)>;

class Publication {
 public:
  // A directory (or S3 prefix) output; the manifest is "modelsmith.manifest.json" inside it.
  // FAILED_PRECONDITION OUTPUT_NOT_EMPTY when it holds files and neither `overwrite` nor a rerun
  // allows replacing them, OUTPUT_IS_FILE when it names a file; `field` names the spec field.
  static absl::StatusOr<Publication> ForDirectory(const StorageRouter& router, absl::string_view output_uri,
                                                  bool overwrite, uint32_t attempt, absl::string_view field);
  // A one-file output ("model.gguf"); the manifest is "<file>.manifest.json" beside it.
  // `sibling_uris` are further files the job writes beside it (split parts), held to the same
  // rules. FAILED_PRECONDITION OUTPUT_EXISTS when one of them or the manifest exists and
  // neither `overwrite` nor a rerun allows replacing it.
  static absl::StatusOr<Publication> ForFile(const StorageRouter& router, absl::string_view output_uri, bool overwrite,
                                             uint32_t attempt, absl::string_view field,
                                             const std::vector<std::string>& sibling_uris = {});

  // The submit-time checks of the two, without changing anything.
  static absl::Status CheckDirectoryVacant(const StorageRouter& router, absl::string_view output_uri, bool overwrite,
                                           absl::string_view field);
  static absl::Status CheckFileVacant(const StorageRouter& router, absl::string_view output_uri, bool overwrite,
                                      absl::string_view field);

  // INVALID_ARGUMENT OUTPUT_OVERLAPS_INPUT when the directory output `output_uri` is the
  // directory a file of `input` lives in: writing there would replace files while they are read.
  static absl::Status CheckApartFromInput(const ModelView& input, const StorageRouter& router,
                                          absl::string_view output_uri, absl::string_view field);

  Publication(Publication&&) noexcept;
  Publication& operator=(Publication&&) noexcept;
  // Aborts every staged artifact, and removes every committed one, unless published.
  ~Publication();

  ObjectStore& store() const { return *store_; }
  // The output as resolved: the directory, or the file.
  const std::string& uri() const { return uri_; }
  // The uri of `name` in the output's directory (a file output's directory for ForFile).
  std::string UriOf(absl::string_view name) const;

  // A writer for the object at `uri` (inside the output's directory): staged, invisible until
  // Publish. The caller appends every byte, then hands it back through Hold or Stage.
  absl::StatusOr<std::unique_ptr<ObjectWriter>> OpenWriter(const std::string& uri);

  // Takes a staged writer whose bytes are all appended. `artifact` carries uri, size, role and
  // the SHA-256 of what the staged object holds, already checked by the caller; an empty sha256
  // means the store cannot read back before a commit: Publish then runs `check` on the committed
  // object and hashes it.
  void Hold(std::unique_ptr<ObjectWriter> writer, v1::Artifact artifact, ObjectChecker check);

  // Verifies what `out` wrote (its size must be `size_bytes`; `check` passes on the staged object;
  // its digest is the one the writer took while writing, or a pass over the object) and holds it.
  // On error `out` is aborted. Returns the artifact entry.
  absl::StatusOr<v1::Artifact> Stage(PipelinedWriter& out, uint64_t size_bytes, absl::string_view role,
                                     const ObjectChecker& check, ProgressTracker& tracker, const JobContext& context);

  // The whole life of one artifact at `uri`: a PipelinedWriter that compares every range it
  // writes with what it was given (kCompare, 32 MiB queued), `produce` on it, then Stage.
  absl::StatusOr<v1::Artifact> Write(const std::string& uri, absl::string_view role, const ObjectProducer& produce,
                                     ProgressTracker& tracker, const JobContext& context);

  // A small object (a config.json, an index) written in one piece and held.
  absl::StatusOr<v1::Artifact> WriteSmall(const std::string& uri, const std::string& text, absl::string_view role);

  // The artifacts so far, committed and staged, in order.
  std::vector<v1::Artifact> artifacts() const;

  // Commits what is staged now, in order, and fills in the SHA-256 of those the store could
  // only read after the commit (checked then). For a kind whose last artifact lists the digests
  // of the earlier ones (a chunk index): call it after the big artifacts, before writing that
  // one. Until Publish succeeds, what was committed is removed again on failure or destruction.
  absl::Status Commit(ProgressTracker& tracker, const JobContext& context);

  // Step 3 above: Commit, then the manifest, then the previous output's leftovers. `manifest` is the kind's manifest
  // body; an "artifacts" list is added. On success appends every artifact, the manifest last, to `result` and sets
  // figures.bytes_written to the sum of their sizes. Call once.
  absl::Status Publish(nlohmann::ordered_json manifest, v1::JobResult& result, ProgressTracker& tracker,
                       const JobContext& context);

 private:
  struct Staged {
    std::unique_ptr<ObjectWriter> writer;
    v1::Artifact artifact;
    ObjectChecker check;
  };

  Publication(ObjectStore* store, std::string uri, std::string directory, std::string manifest_name)
      : store_(store),
        uri_(std::move(uri)),
        directory_(std::move(directory)),
        manifest_name_(std::move(manifest_name)) {}
  void AbortStaged();
  // Aborts what is staged; removes what was committed and, if anything was, the previous
  // manifest (it may list files that were replaced).
  void RollBack();

  ObjectStore* store_;
  std::string uri_;
  std::string directory_;
  std::string manifest_name_;
  std::vector<std::string> previous_names_;  // listed by the manifest found at Open
  std::vector<Staged> staged_;
  std::vector<v1::Artifact> committed_;  // committed, not yet published
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CORE_PUBLICATION_H_
