// The shard job: reshard a safetensors checkpoint (single or sharded) into Hugging Face shards.
//
// plan: open the input headers, parse max_shard_size, assign tensors to shards (hf_greedy or
//   balanced), name them;
// execute: per shard, write the header (reference-writer order, input __metadata__ kept with
//   "format": "pt") then copy each tensor's bytes unchanged (copy_file_range locally), polling
//   for cancellation every 64 MiB;
// verify: while the next shard is copied, re-read the staged shard, parse its header, check the
//   tensor table against the plan and compute its SHA-256;
// publish: the staged shards and the index (when there is more than one shard) are committed
//   together, then the manifest (publication.h); a failed or cancelled job leaves a previous
//   output whole.
#ifndef MODELSMITH_WORKERS_JOBS_SHARD_SHARD_JOB_H_
#define MODELSMITH_WORKERS_JOBS_SHARD_SHARD_JOB_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/formats/model_view.h"
#include "workers/formats/safetensors.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/core/job_kind.h"

namespace modelsmith {

// The shard spec, parsed.
struct ShardOptions {
  std::string input;
  std::string output;
  uint64_t max_shard_size_bytes = 0;  // 0: one file
  v1::ShardStrategy strategy = v1::SHARD_STRATEGY_UNSPECIFIED;
  std::string stem;  // "model" unless the spec names one
  std::string variant;
  bool overwrite = false;
};

// One output shard: its name, its tensors in file order with their sources, its header.
struct PlannedShard {
  std::string name;
  std::vector<SafetensorsEntry> entries;   // file order
  std::vector<const TensorInfo*> sources;  // parallel to entries; point into the plan's model
  std::string header;                      // serialized header bytes
  uint64_t file_bytes = 0;
};

struct ShardJobPlan {
  ShardOptions options;
  ModelView model;
  std::vector<PlannedShard> shards;
  std::vector<const TensorInfo*> oversized;  // tensors larger than the limit (a warning each)
  uint64_t estimated_peak_bytes = 0;
};

// The job kind (core/job_kind.h has the contract of each function). Parse: INVALID_ARGUMENT for a
// missing input or output, a bad size, strategy, stem or variant. MakePlan: the input must be a
// safetensors checkpoint with tensors (UNSUPPORTED_FORMAT, MODEL_EMPTY), the output apart from its
// directory (OUTPUT_OVERLAPS_INPUT) and vacant; at most kMaxShardCount shards (TOO_MANY_SHARDS).
class ShardJob {
 public:
  using Options = ShardOptions;
  using Plan = ShardJobPlan;
  static absl::StatusOr<ShardOptions> Parse(const v1::JobSpec& spec);
  static absl::StatusOr<ShardJobPlan> MakePlan(const ShardOptions& options, const PlanEnv& env);
  static absl::StatusOr<v1::JobResult> Produce(ShardJobPlan& plan, const JobRun& run, JobContext& context);
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_SHARD_SHARD_JOB_H_
