#include "workers/jobs/bisect/bisect_plan.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <optional>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace modelsmith {
namespace {

enum Stage { kPrologue = 0, kBlocks = 1, kEpilogue = 2 };

// Where one tensor sits in execution order, compared as a tuple.
struct OrderKey {
  int stage = kEpilogue;
  int container_rank = 0;     // blocks: down/encoder/input, then mid, then up/decoder/output
  size_t container_seen = 0;  // blocks: first appearance of the container
  uint64_t block_number = 0;
  size_t position = 0;  // the checkpoint's order

  auto tie() const { return std::tie(stage, container_rank, container_seen, block_number, position); }
  bool operator<(const OrderKey& other) const { return tie() < other.tie(); }
};

bool IsNumber(absl::string_view s) {
  return !s.empty() && s.size() <= 18 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The module of a tensor that is not part of a multi-tensor quantized group.
std::string StripLastComponent(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

struct BlockOf {
  std::string container;  // the name before the number
  std::string block;      // container + "." + number
  uint64_t number = 0;
};

std::optional<BlockOf> FindBlock(const std::string& module) {
  const std::vector<absl::string_view> parts = absl::StrSplit(module, '.');
  for (size_t p = 0; p < parts.size(); ++p) {
    if (!IsNumber(parts[p])) continue;
    BlockOf b;
    b.container = absl::StrJoin(parts.begin(), parts.begin() + p, ".");
    b.block = absl::StrJoin(parts.begin(), parts.begin() + p + 1, ".");
    b.number = std::stoull(std::string(parts[p]));
    return b;
  }
  return std::nullopt;
}

int ContainerRank(const std::string& container) {
  int rank = 1;
  for (absl::string_view part : absl::StrSplit(absl::AsciiStrToLower(container), '.')) {
    if (absl::StartsWith(part, "down") || absl::StartsWith(part, "encoder") || absl::StartsWith(part, "input"))
      rank = 0;
    if (absl::StartsWith(part, "up") || absl::StartsWith(part, "decoder") || absl::StartsWith(part, "output")) rank = 2;
  }
  return rank;
}

bool LooksLikeEmbedding(const std::string& module) {
  const std::string lower = absl::AsciiStrToLower(module);
  for (absl::string_view word :
       {"embed", "wte", "wpe", "tok_", "token_embd", "conv_in", "time_emb", "pos_emb", "patch_emb", "rope", "rotary"}) {
    if (absl::StrContains(lower, word)) return true;
  }
  return false;
}

bool LooksLikeNorm(const std::string& module) {
  const std::string lower = absl::AsciiStrToLower(module);
  return absl::StrContains(lower, "norm") || absl::StrContains(lower, "ln_f");
}

}  // namespace

std::vector<BisectUnit> BisectUnits(const std::vector<TensorInfo>& tensors, const std::vector<QuantizedGroup>& groups,
                                    v1::BisectGranularity granularity) {
  std::map<std::string, const QuantizedGroup*> group_of;
  for (const QuantizedGroup& g : groups) {
    if (g.tensors.size() < 2) continue;  // a lone tensor (GGUF, fp8) is its own module's member
    for (const std::string& name : g.tensors) group_of[name] = &g;
  }
  std::vector<std::string> modules(tensors.size());
  std::vector<std::optional<BlockOf>> blocks(tensors.size());
  std::vector<OrderKey> keys(tensors.size());
  std::map<std::string, size_t> container_seen;
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto group = group_of.find(tensors[i].name);
    modules[i] = group != group_of.end() ? group->second->module : StripLastComponent(tensors[i].name);
    blocks[i] = FindBlock(modules[i]);
    OrderKey& key = keys[i];
    key.position = i;
    if (blocks[i]) {
      key.stage = kBlocks;
      key.container_rank = ContainerRank(blocks[i]->container);
      key.container_seen = container_seen.emplace(blocks[i]->container, container_seen.size()).first->second;
      key.block_number = blocks[i]->number;
    } else if (LooksLikeEmbedding(modules[i])) {
      key.stage = kPrologue;
    } else {
      key.stage = kEpilogue;
      key.container_rank = LooksLikeNorm(modules[i]) ? 0 : 1;
    }
  }
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return keys[a] < keys[b]; });

  std::vector<BisectUnit> units;
  std::map<std::string, size_t> unit_of;
  for (size_t i : order) {
    std::string name;
    switch (granularity) {
      case v1::BISECT_GRANULARITY_MODULE: name = modules[i]; break;
      case v1::BISECT_GRANULARITY_TENSOR: {
        auto group = group_of.find(tensors[i].name);
        name = group != group_of.end() ? group->second->module : tensors[i].name;
        break;
      }
      default: name = blocks[i] ? blocks[i]->block : modules[i]; break;
    }
    auto [it, added] = unit_of.emplace(name, units.size());
    if (added) units.push_back(BisectUnit{name, blocks[i] ? blocks[i]->block : "", {}, 0});
    BisectUnit& unit = units[it->second];
    unit.tensors.push_back(i);
    unit.size_bytes += tensors[i].size_bytes;
  }
  return units;
}

uint64_t BestLargestChunk(std::span<const uint64_t> sizes, size_t chunks) {
  // The smallest cap under which a greedy left-to-right fill needs at most `chunks` runs.
  uint64_t low = 0;
  uint64_t high = 0;
  for (uint64_t s : sizes) low = std::max(low, s), high += s;
  auto fits = [&](uint64_t cap) {
    size_t runs = 1;
    uint64_t filled = 0;
    for (uint64_t s : sizes) {
      if (filled + s > cap) ++runs, filled = 0;
      filled += s;
    }
    return runs <= chunks;
  };
  while (low < high) {
    const uint64_t mid = low + (high - low) / 2;
    if (fits(mid)) {
      high = mid;
    } else {
      low = mid + 1;
    }
  }
  return low;
}

double ImbalanceRatio(std::span<const uint64_t> chunk_bytes) {
  uint64_t largest = 0;
  uint64_t sum = 0;
  for (uint64_t s : chunk_bytes) largest = std::max(largest, s), sum += s;
  return sum == 0 ? 1.0
                  : static_cast<double>(largest) / (static_cast<double>(sum) / static_cast<double>(chunk_bytes.size()));
}

v1::BisectFigures MakeBisectFigures(std::span<const uint64_t> chunk_bytes, std::span<const uint64_t> file_bytes,
                                    std::string granularity, size_t units) {
  v1::BisectFigures figures;
  figures.set_chunk_count(chunk_bytes.size());
  for (uint64_t b : chunk_bytes) figures.add_chunk_sizes_bytes(b);
  for (uint64_t b : file_bytes) figures.add_chunk_file_bytes(b);
  figures.set_imbalance_ratio(ImbalanceRatio(chunk_bytes));
  figures.set_granularity(std::move(granularity));
  figures.set_units(units);
  return figures;
}

std::vector<size_t> PartitionMinMax(std::span<const uint64_t> sizes, size_t chunks) {
  const size_t n = sizes.size();
  const uint64_t cap = BestLargestChunk(sizes, chunks);
  std::vector<uint64_t> prefix(n + 1, 0);
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + sizes[i];
  // need[i]: the fewest runs under `cap` that cover sizes[i..n), by greedy fill from i.
  std::vector<size_t> need(n + 1, 0);
  for (size_t i = n, far = n; i-- > 0;) {
    while (prefix[far] - prefix[i] > cap) --far;
    // far is the end of the longest run from i; as i moves left it can only move left too.
    need[i] = 1 + need[far];
  }
  std::vector<size_t> ends;
  size_t start = 0;
  for (size_t k = 0; k + 1 < chunks; ++k) {
    const size_t left_after = chunks - k - 1;
    const double target = static_cast<double>(prefix[n] - prefix[start]) / static_cast<double>(chunks - k);
    size_t best = start + 1;
    double best_gap = -1;
    for (size_t e = start + 1; e + left_after <= n && prefix[e] - prefix[start] <= cap; ++e) {
      if (need[e] > left_after) continue;
      const double gap = std::abs(static_cast<double>(prefix[e] - prefix[start]) - target);
      if (best_gap < 0 || gap < best_gap) best = e, best_gap = gap;
    }
    ends.push_back(best);
    start = best;
  }
  ends.push_back(n);
  return ends;
}

}  // namespace modelsmith
