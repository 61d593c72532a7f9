#include "workers/jobs/lora_merge/lora_match.h"

#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace modelsmith {
namespace {

std::string Flatten(std::string path) {
  std::replace(path.begin(), path.end(), '.', '_');
  return path;
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

class BaseIndex {
 public:
  explicit BaseIndex(const std::vector<TensorInfo>& base) {
    for (const TensorInfo& t : base) {
      if (!absl::EndsWith(t.name, ".weight")) continue;
      const std::string path = t.name.substr(0, t.name.size() - 7);
      by_path_[path] = &t;
      by_flat_[Flatten(path)].push_back(&t);
    }
  }

  const TensorInfo* Find(const std::string& path) const {
    auto it = by_path_.find(path);
    return it == by_path_.end() ? nullptr : it->second;
  }
  const std::vector<const TensorInfo*>& FindFlat(const std::string& flat) const {
    static const std::vector<const TensorInfo*> kNone;
    auto it = by_flat_.find(flat);
    return it == by_flat_.end() ? kNone : it->second;
  }

  // The three weights whose paths are nearest to `path` (compared flattened when `flat`).
  std::vector<std::string> Closest(const std::string& path, bool flat) const {
    std::vector<std::pair<size_t, std::string>> scored;
    for (const auto& [p, t] : by_path_) scored.emplace_back(EditDistance(path, flat ? Flatten(p) : p), t->name);
    const size_t n = std::min<size_t>(3, scored.size());
    std::partial_sort(scored.begin(), scored.begin() + n, scored.end());
    std::vector<std::string> names;
    for (size_t i = 0; i < n; ++i) names.push_back(scored[i].second);
    return names;
  }

 private:
  std::map<std::string, const TensorInfo*> by_path_;
  std::map<std::string, std::vector<const TensorInfo*>> by_flat_;
};

std::string ShapeText(const std::vector<uint64_t>& shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

uint64_t Product(const std::vector<uint64_t>& shape, size_t from) {
  uint64_t n = 1;
  for (size_t i = from; i < shape.size(); ++i) n *= shape[i];
  return n;
}

// Empty when `base` takes the module's update (and fills rows/cols), else what is wrong.
std::string CheckTakes(const LoraModule& m, const TensorInfo& base, LoraTarget* target) {
  const auto& a = m.down->shape;
  const auto& b = m.up->shape;
  const auto& w = base.shape;
  if (base.dtype != DType::kF32 && base.dtype != DType::kF16 && base.dtype != DType::kBF16) {
    return absl::StrCat("base weight '", base.name, "' is ", DTypeName(base.dtype),
                        "; only F32, F16 and BF16 bases can be merged into");
  }
  const std::string shapes = absl::StrCat("base weight '", base.name, "' ", ShapeText(w), " cannot take B ",
                                          ShapeText(b), " @ A ", ShapeText(a));
  if (m.fan_in_fan_out) {
    if (w.size() != 2 || a.size() != 2 || w[0] != a[1] || w[1] != b[0])
      return absl::StrCat(shapes, " with fan_in_fan_out ([in, out])");
    target->rows = w[0];
    target->cols = w[1];
    return "";
  }
  if (w.size() != 2 && w.size() != 4) return shapes;
  const bool kernel = a.size() == 4 && (a[2] != 1 || a[3] != 1);
  if (w[0] != b[0] || Product(w, 1) != Product(a, 1) || (kernel && (w.size() != 4 || w[2] != a[2] || w[3] != a[3]))) {
    if (w.size() == 4 && a.size() == 4 && w[0] == b[0] && w[2] == a[2] && w[3] == a[3] && a[1] % w[1] == 0 &&
        a[1] != w[1]) {
      // PEFT's LoRA on a grouped convolution: A reads every input channel, so the update reaches
      // across groups, which the grouped weight has no entries for.
      return absl::StrCat(
          shapes, ": the base is a grouped convolution (", a[1] / w[1], " groups of ", w[1],
          " input channels) but A reads all ", a[1],
          " input channels, so the update is not block-diagonal and no merged weight computes it; keep this "
          "adapter unmerged");
    }
    return shapes;
  }
  target->rows = w[0];
  target->cols = Product(w, 1);
  return "";
}

}  // namespace

LoraMatch MatchLoraAdapter(const LoraAdapter& adapter, const std::vector<TensorInfo>& base) {
  const BaseIndex index(base);
  LoraMatch match;
  std::map<const TensorInfo*, std::string> taken;
  for (const LoraModule& m : adapter.modules) {
    const TensorInfo* found = nullptr;
    if (m.flattened) {
      const std::vector<const TensorInfo*>& candidates = index.FindFlat(m.path);
      if (candidates.size() > 1) {
        std::vector<std::string> names;
        for (const TensorInfo* t : candidates) names.push_back(t->name);
        match.mismatches.push_back(
            {m.key,
             absl::StrCat("ambiguous: the flattened name '", m.path, "' fits ", candidates.size(), " base weights"),
             names});
        continue;
      }
      if (!candidates.empty()) found = candidates.front();
    } else {
      found = index.Find(m.path);
      if (found == nullptr && !m.component.empty()) found = index.Find(absl::StrCat(m.component, ".", m.path));
    }
    if (found == nullptr) {
      match.mismatches.push_back({m.key,
                                  absl::StrCat("no base weight '", m.path, m.flattened ? "' (flattened)" : ".weight'"),
                                  index.Closest(m.path, m.flattened)});
      continue;
    }
    LoraTarget target{&m, found, 0, 0};
    if (std::string problem = CheckTakes(m, *found, &target); !problem.empty()) {
      match.mismatches.push_back({m.key, problem, {}});
      continue;
    }
    if (m.magnitude != nullptr && m.fan_in_fan_out) {
      match.mismatches.push_back({m.key, "DoRA with fan_in_fan_out is not supported", {}});
      continue;
    }
    if (auto [it, inserted] = taken.try_emplace(found, m.key); !inserted) {
      match.mismatches.push_back(
          {m.key, absl::StrCat("base weight '", found->name, "' is also the target of module '", it->second, "'"), {}});
      continue;
    }
    match.targets.push_back(target);
  }
  for (const std::string& key : adapter.stray_keys) {
    match.mismatches.push_back(
        {key, "not part of a complete LoRA module (an unknown suffix, or lora_A without lora_B)", {}});
  }
  return match;
}

}  // namespace modelsmith
