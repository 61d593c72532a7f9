#include "workers/jobs/shard/shard_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

// Contiguous greedy packing under `cap`, over-limit tensors (size > limit) alone. Returns the
// shard count, filling `out` when given.
size_t PackContiguous(std::span<const uint64_t> sizes, uint64_t limit, uint64_t cap, ShardAssignment* out) {
  size_t count = 0;
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  auto close = [&] {
    if (current.empty()) return;
    ++count;
    if (out != nullptr) out->push_back(current);
    current.clear();
    current_bytes = 0;
  };
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] > limit) {
      close();
      current.push_back(i);
      close();
      continue;
    }
    if (!current.empty() && current_bytes + sizes[i] > cap) close();
    current.push_back(i);
    current_bytes += sizes[i];
  }
  close();
  return count;
}

bool IsNameChar(char c, bool allow_dot) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         (allow_dot && c == '.');
}

}  // namespace

ShardAssignment PlanShardsHfGreedy(std::span<const uint64_t> sizes, uint64_t max_shard_bytes) {
  ShardAssignment shards;
  if (sizes.empty()) return shards;
  if (max_shard_bytes == 0) {
    shards.emplace_back();
    for (size_t i = 0; i < sizes.size(); ++i) shards.back().push_back(i);
    return shards;
  }
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] > max_shard_bytes) {
      shards.push_back({i});
      continue;
    }
    if (current_bytes + sizes[i] > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(i);
    current_bytes += sizes[i];
  }
  if (!current.empty()) shards.push_back(std::move(current));
  return shards;
}

ShardAssignment PlanShardsBalanced(std::span<const uint64_t> sizes, uint64_t max_shard_bytes) {
  if (sizes.empty() || max_shard_bytes == 0) return PlanShardsHfGreedy(sizes, max_shard_bytes);
  // Greedy contiguous packing gives the fewest shards; then the smallest cap that still packs
  // into that many is the smallest achievable largest shard (binary search over the cap).
  const size_t fewest = PackContiguous(sizes, max_shard_bytes, max_shard_bytes, nullptr);
  uint64_t low = 0;
  for (uint64_t s : sizes) {
    if (s <= max_shard_bytes) low = std::max(low, s);
  }
  uint64_t high = max_shard_bytes;
  while (low < high) {
    const uint64_t mid = low + (high - low) / 2;
    if (PackContiguous(sizes, max_shard_bytes, mid, nullptr) <= fewest) {
      high = mid;
    } else {
      low = mid + 1;
    }
  }
  ShardAssignment shards;
  PackContiguous(sizes, max_shard_bytes, low, &shards);
  return shards;
}

std::string ShardFileName(absl::string_view stem, absl::string_view variant, size_t shard_index, size_t shard_count) {
  std::string base(stem);
  if (!variant.empty()) absl::StrAppend(&base, ".", variant);
  if (shard_count <= 1) return absl::StrCat(base, ".safetensors");
  return absl::StrFormat("%s-%05d-of-%05d.safetensors", base, shard_index + 1, shard_count);
}

std::string IndexFileName(absl::string_view stem, absl::string_view variant) {
  if (variant.empty()) return absl::StrCat(stem, ".safetensors.index.json");
  return absl::StrCat(stem, ".safetensors.index.", variant, ".json");
}

absl::Status ValidateShardNaming(absl::string_view stem, absl::string_view variant) {
  bool stem_ok = !stem.empty() && stem.size() <= 100 && stem.front() != '.';
  for (char c : stem) stem_ok = stem_ok && IsNameChar(c, /*allow_dot=*/true);
  if (!stem_ok) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_STEM",
                     absl::StrCat("stem '", stem,
                                  "' must be 1-100 characters of A-Z a-z 0-9 _ - . and not start "
                                  "with '.'"),
                     {{"field", "stem"}});
  }
  bool variant_ok = variant.size() <= 32;
  for (char c : variant) variant_ok = variant_ok && IsNameChar(c, /*allow_dot=*/false);
  if (!variant_ok) {
    return MakeError(absl::StatusCode::kInvalidArgument, "INVALID_VARIANT",
                     absl::StrCat("variant '", variant, "' must be at most 32 characters of A-Z a-z 0-9 _ -"),
                     {{"field", "variant"}});
  }
  return absl::OkStatus();
}

std::string HfIndexJson(const nlohmann::json& metadata, uint64_t total_size,
                        const std::vector<std::pair<std::string, std::string>>& weight_map) {
  nlohmann::json meta = metadata.is_object() ? metadata : nlohmann::json::object();
  meta["total_size"] = total_size;
  nlohmann::json map = nlohmann::json::object();
  for (const auto& [tensor, file] : weight_map) map[tensor] = file;
  nlohmann::json index = {{"metadata", std::move(meta)}, {"weight_map", std::move(map)}};
  return index.dump(2, ' ', /*ensure_ascii=*/true) + "\n";
}

}  // namespace modelsmith
