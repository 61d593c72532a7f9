// The model files of a LoRA merge's output, written one base file at a time.
//
// A base file whose tensor table does not change is mirrored: the same size, the same header
// and padding byte for byte, untouched tensors copied, merged tensors rewritten in place in
// their stored type (a requantized group member by member). A torch checkpoint is mirrored as
// well, and each rewritten record's CRC-32 is written into the zip fields that hold it
// (LoraMergePlan::crc_fields): the record is merged into memory first, since its local header,
// which carries the CRC, comes before its data.
//
// A file in LoraMergePlan::rewritten_files (policy DEQUANTIZE) gets a new header: the base's
// tensors in the base's data order, a dequantized weight as one float tensor under its name,
// the other tensors of its group left out. Safetensors headers are serialized as the reference
// writer does; a GGUF part keeps its key-values and alignment.
//
// Either way the written object is checked before it is published: a mirrored file against the
// base's size and header, a rewritten one by reading its tensor table back.
#ifndef MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_FILES_H_
#define MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_FILES_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/lora_merge/lora_merge_plan.h"
#include "workers/jobs/lora_merge/lora_merge_tensor.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/core/publication.h"
#include "workers/storage/pipelined_writer.h"

namespace modelsmith {

struct MergedRecord {
  const MergeTensor* tensor;
  MergedTensorFigures figures;
};

// What the file walk carries from file to file: the merged tensors' figures, and the requantized
// groups whose tensors are not all written yet (a bitsandbytes weight and its SCB may sit in
// different shards).
struct MergeState {
  std::vector<MergedRecord> records;  // reserved for plan.merged.size(): records are pointed to
  std::map<size_t, std::map<std::string, std::string>> group_bytes;  // by key in plan.merged
};

struct MergeIo {
  ProgressTracker& tracker;
  RateLimiter& pace;
  const JobContext& context;
};

// A written base file: its size and the check it must pass before it is published.
using WrittenFile = WrittenObject;

// Writes the output counterpart of base file `file_index` into `out`.
absl::StatusOr<WrittenFile> WriteMergedFile(const LoraMergePlan& plan, size_t file_index, PipelinedWriter& out,
                                            MergeIo io, MergeState& state);

struct WrittenTensor {
  size_t file_index;  // into plan.base.files
  uint64_t size_bytes;
};

// The tensors the output holds (after a DEQUANTIZE rewrite too), for the index: by name.
std::map<std::string, WrittenTensor> WrittenTensors(const LoraMergePlan& plan);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_FILES_H_
