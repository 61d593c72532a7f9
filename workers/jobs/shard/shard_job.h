// The shard job: reshard a safetensors checkpoint (single or sharded) into Hugging Face shards.
//
// plan: open the input headers, parse max_shard_size, assign tensors to shards (hf_greedy or
//   balanced), name them;
// execute: per shard, write the header (reference-writer order, input __metadata__ kept with
//   "format": "pt") then copy each tensor's bytes unchanged (copy_file_range locally), polling
//   for cancellation every 64 MiB;
// verify: while the next shard is copied, re-read the staged shard, parse its header, check the
//   tensor table against the plan and compute its SHA-256;
// publish: commit the shards, then the index (when there is more than one shard), then the
//   manifest.
#ifndef MODELSMITH_WORKERS_JOBS_SHARD_SHARD_JOB_H_
#define MODELSMITH_WORKERS_JOBS_SHARD_SHARD_JOB_H_

#include "absl/status/statusor.h"
#include "modelsmith/v1/job.pb.h"
#include "workers/jobs/core/job_context.h"

namespace modelsmith {

// Field checks that need no I/O. INVALID_ARGUMENT naming the field.
absl::Status ValidateShardSpec(const v1::ShardSpec& spec);

// Submit-time checks with I/O (input readable and well-formed, output vacant, paths inside the
// roots); returns the estimated peak memory of the job in bytes.
absl::StatusOr<uint64_t> PreflightShardJob(const v1::ShardSpec& spec, const StorageRouter& router);

absl::StatusOr<v1::JobResult> RunShardJob(const JobRun& run, JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_SHARD_SHARD_JOB_H_
