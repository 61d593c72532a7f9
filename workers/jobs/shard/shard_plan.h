// Shard planning: which tensors go into which file, and what the files are called.
// Pure functions; no I/O.
#ifndef MODELSMITH_WORKERS_JOBS_SHARD_SHARD_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_SHARD_SHARD_PLAN_H_

#include "absl/strings/string_view.h"
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace modelsmith {

// One shard: indices into the planner's input, in the order they were assigned.
using ShardAssignment = std::vector<std::vector<size_t>>;

// huggingface_hub split_state_dict_into_shards_factory (formats.md §2), for tensors in
// state-dict order with sizes `sizes_bytes`:
//   - a tensor larger than the limit becomes a shard of its own, appended at once while the
//     shard being filled stays open (so it lands before that shard);
//   - otherwise, if the open shard would exceed the limit, it is closed and a new one started;
//   - the last open shard is appended if non-empty.
// `max_shard_bytes` 0 means no limit: one shard. An empty input gives no shards.
ShardAssignment PlanShardsHfGreedy(std::span<const uint64_t> sizes_bytes, uint64_t max_shard_bytes);

// The fewest shards that respect the limit with tensors kept in order (a tensor larger than the
// limit stands alone), and among those the split that minimises the largest shard (over the
// shards that are not a lone over-limit tensor). Deterministic: the earliest such split.
ShardAssignment PlanShardsBalanced(std::span<const uint64_t> sizes_bytes, uint64_t max_shard_bytes);

// Hugging Face file names (huggingface_hub constants.py, diffusers hub_utils._add_variant):
//   one shard:  "{stem}.safetensors"                          or "{stem}.{variant}.safetensors"
//   n shards:   "{stem}-{i:05d}-of-{n:05d}.safetensors"       (i is 1-based)
//               "{stem}.{variant}-{i:05d}-of-{n:05d}.safetensors"
//   index:      "{stem}.safetensors.index.json"               or "{stem}.safetensors.index.{variant}.json"
std::string ShardFileName(absl::string_view stem, absl::string_view variant, size_t shard_index, size_t shard_count);
std::string IndexFileName(absl::string_view stem, absl::string_view variant);

// The index JSON of a sharded checkpoint: {"metadata": `metadata` (an object, or empty) with
// "total_size", "weight_map": {tensor: file}} with indent=2, sorted keys, ASCII escapes and a
// trailing newline, as transformers' save_pretrained writes it.
std::string HfIndexJson(const nlohmann::json& metadata, uint64_t total_size,
                        const std::vector<std::pair<std::string, std::string>>& weight_map);

// Shard numbers have five digits in Hugging Face names.
inline constexpr size_t kMaxShardCount = 99'999;

// INVALID_ARGUMENT unless `stem` is a usable file stem ([A-Za-z0-9_.-], not starting with '.',
// at most 100 characters) and `variant` is empty or [A-Za-z0-9_-] up to 32 characters.
absl::Status ValidateShardNaming(absl::string_view stem, absl::string_view variant);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_SHARD_SHARD_PLAN_H_
