// Matching LoRA adapter modules to the base checkpoint's weights: strict, and explained when it
// fails.
//
// A module matches the base tensor "<path>.weight" (diffusers: also with its component prefix);
// a kohya module's flattened path matches the one base weight whose path, with every "." made
// "_", equals it; two candidates make it ambiguous. The base weight must then take the update:
// [out, in(, kh, kw)] against B [out, r] and A [r, in(, kh, kw)] (a 1x1 convolution and a linear
// layer take each other's adapters, as kohya merges them), or [in, out] with fan_in_fan_out.
// Each failure names the adapter key, what is wrong, and the closest base weights by edit
// distance, so a user can see a prefix or naming mismatch at a glance.
#ifndef MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MATCH_H_
#define MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MATCH_H_

#include <string>
#include <vector>

#include "workers/formats/lora_adapter.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

struct LoraTarget {
  const LoraModule* module;
  const TensorInfo* base;  // the weight it updates
  uint64_t rows;           // the base as stored, flattened to [rows, cols]
  uint64_t cols;
};

struct LoraMismatch {
  std::string key;                   // the adapter's key (module prefix or stray tensor name)
  std::string problem;               // "no base weight ...", "ambiguous ...", "shape ..."
  std::vector<std::string> closest;  // up to 3 base weight names
};

struct LoraMatch {
  std::vector<LoraTarget> targets;  // in the adapter's module order
  std::vector<LoraMismatch> mismatches;
};

// Matches every module of `adapter` against `base` (the tensors of the base checkpoint). Stray
// keys of the adapter are reported as mismatches too.
LoraMatch MatchLoraAdapter(const LoraAdapter& adapter, const std::vector<TensorInfo>& base);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MATCH_H_
