// Bisect planning: the units a checkpoint is cut between, in execution order, and the contiguous
// split of those units into N chunks that minimises the largest chunk. Pure functions; no I/O.
//
// Execution order, read from the tensor names (the files' own order is no guide: safetensors
// writers sort names as strings, so "layers.10" precedes "layers.2"):
//   1. the prologue: tensors outside any block whose names say embedding ("embed", "wte", "wpe",
//      "tok_", "token_embd", "conv_in", "time_emb", "pos_emb", "patch_emb", "rope", "rotary");
//   2. the blocks: a block is the name up to its first purely numeric component
//      ("model.layers.10", "blk.3", "down_blocks.1"), ordered by container (one whose name starts
//      with down/encoder/input first, mid/middle next, up/decoder/output last, others by first
//      appearance) and then by the number as a number;
//   3. the epilogue: every other tensor outside a block, norms ("norm", "ln_f") first, then the rest
//      (head, pooler, conv_out) in checkpoint order.
// Within a block the checkpoint's order is kept.
//
// A module is a tensor's name without its last component ("…q_proj" for "…q_proj.weight"), except
// that every tensor of a quantized group (quantized_layout.h: a bitsandbytes weight with its SCB,
// absmax and quant maps, a quanto weight with its _data/_scale/_shift, a ChatGLM weight with its
// weight_scale) belongs to the group's module. A unit is a block (granularity BLOCK, the default:
// outside blocks, a module), a module (MODULE) or a tensor with its quantized companions (TENSOR).
// A unit's size is the bytes its tensors really occupy in the file: packed 4-bit data at its packed
// size, every companion counted.
#ifndef MODELSMITH_WORKERS_JOBS_BISECT_BISECT_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_BISECT_BISECT_PLAN_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "modelsmith/v1/job.pb.h"
#include "modelsmith/v1/specs.pb.h"
#include "workers/formats/quantized_layout.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

struct BisectUnit {
  std::string name;             // the block ("model.layers.3"), module or tensor name
  std::string block;            // the block it belongs to, or empty outside blocks
  std::vector<size_t> tensors;  // indices into the planner's input, in execution order
  uint64_t size_bytes = 0;
};

// The units of `tensors` at `granularity`, in execution order. `groups` are the checkpoint's
// quantized groups (DetectQuantizedLayouts).
std::vector<BisectUnit> BisectUnits(const std::vector<TensorInfo>& tensors, const std::vector<QuantizedGroup>& groups,
                                    v1::BisectGranularity granularity);

// The split of `sizes` (in order) into exactly `chunks` non-empty contiguous runs whose largest
// run is as small as any such split allows; among those, each cut is placed so that its chunk is
// as close as it can be to an equal share of what remains. Returns the index one past each
// chunk's last element (the last is sizes.size()). REQUIRES: 1 <= chunks <= sizes.size().
std::vector<size_t> PartitionMinMax(std::span<const uint64_t> sizes, size_t chunks);

// The largest chunk of the best split (what PartitionMinMax achieves): for reports and tests.
uint64_t BestLargestChunk(std::span<const uint64_t> sizes, size_t chunks);

// Largest over mean of `chunk_bytes` (1 when all are empty).
double ImbalanceRatio(std::span<const uint64_t> chunk_bytes);

// The result's figures: chunk count, each chunk's stored and file bytes, the imbalance, the
// granularity's name and the number of units cut between.
v1::BisectFigures MakeBisectFigures(std::span<const uint64_t> chunk_bytes, std::span<const uint64_t> file_bytes,
                                    std::string granularity, size_t units);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_BISECT_BISECT_PLAN_H_
