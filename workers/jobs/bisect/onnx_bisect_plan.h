// Bisecting an ONNX graph: where its stored bytes are used, where it can be cut, and what each
// chunk model holds. No I/O.
//
// Constants: an initializer, a Constant node's output, and the output of a node whose inputs are
// all constants (DequantizeLinear of an int8/int4 initializer with its scale and zero point, a
// Transpose, Cast or Reshape of a weight). Constant nodes have no position of their own; every
// other node ("real") takes the next position in topological order. Each initializer (and each
// Constant node's tensor) is attributed to the position of its first real consumer, found by
// following constant chains, so a quantized weight, its scales and zero points are counted at
// their stored size where they are used: a MatMul after DequantizeLinear, or a
// com.microsoft.MatMulNBits reading its packed B, scales and zero points directly. Unused
// initializers belong to no chunk.
//
// Cuts fall between positions. The tensors that cross a cut are the values real nodes before it
// produce and real nodes after it read (graph inputs are fed to every chunk that reads them and do
// not cross). When cutting only at the places where the fewest tensors cross (usually one: the
// residual stream between blocks) can keep the largest chunk within kOnnxBalanceSlack of the best
// any split achieves, the cuts are chosen among those places, balanced as the checkpoint bisect
// balances blocks (bisect_plan.h). Otherwise, among the splits within the slack, the one with the
// fewest crossing tensors in total is chosen, and among those the one with the smallest largest
// chunk.
//
// A chunk model holds its real nodes, the constant nodes and initializers they need (a constant
// read by two chunks is in both), its graph inputs and the tensors crossing in as inputs, and the
// tensors crossing out plus the graph outputs it produces as outputs, typed from the model's
// value_info after shape inference (ONNX's, plus the output type of com.microsoft.MatMulNBits,
// which ONNX's registry does not know). A crossing tensor whose type is still unknown is
// FAILED_PRECONDITION (ONNX_TYPE_UNKNOWN).
#ifndef MODELSMITH_WORKERS_JOBS_BISECT_ONNX_BISECT_PLAN_H_
#define MODELSMITH_WORKERS_JOBS_BISECT_ONNX_BISECT_PLAN_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "workers/formats/onnx_graph.h"

namespace modelsmith {

inline constexpr double kOnnxBalanceSlack = 0.05;

struct OnnxChunkPlan {
  std::vector<size_t> nodes;              // node indices in topological order, constants included
  std::vector<std::string> initializers;  // names, in the graph's initializer order
  std::vector<std::string> inputs;        // graph inputs (in the graph's order), then crossing tensors
  std::vector<std::string> outputs;       // crossing tensors, then graph outputs (in the graph's order)
  size_t first_position = 0;
  size_t end_position = 0;               // one past the last
  uint64_t size_bytes = 0;               // attributed stored bytes
  std::vector<std::string> crossing_in;  // the tensors of `inputs` that an earlier chunk produces
};

struct OnnxBisectPlan {
  std::vector<size_t> positions;         // real node indices, topological
  std::vector<uint64_t> position_bytes;  // attributed stored bytes per position
  std::vector<uint32_t> crossings;       // tensors crossing the cut after each position
  std::vector<OnnxChunkPlan> chunks;
  uint64_t total_bytes = 0;
};

// Adds value_info for every value shape inference can type (ONNX's InferShapes, repeated with the
// outputs of com.microsoft.MatMulNBits typed from its input A and attribute N).
void InferOnnxTypes(onnx::ModelProto& model);

// The cuts: ends of each chunk over `sizes` (one per position), as described above.
// REQUIRES: 1 <= chunks <= sizes.size(); crossings.size() == sizes.size().
std::vector<size_t> ChooseOnnxCuts(std::span<const uint64_t> sizes, std::span<const uint32_t> crossings, size_t chunks);

// INVALID_ARGUMENT BISECT_TOO_MANY_CHUNKS (field bisect.chunks) when there are fewer positions
// than chunks; the errors of IndexOnnxGraph.
absl::StatusOr<OnnxBisectPlan> PlanOnnxBisect(const onnx::ModelProto& model, size_t chunks);

// The chunk's model: the original's metadata and opsets, the chunk's nodes, initializers (copied
// as they are: external references still point at the original's files), inputs and outputs with
// their types, and the value_info of its internal values. `model` must have been through
// InferOnnxTypes.
absl::StatusOr<onnx::ModelProto> BuildOnnxChunk(const onnx::ModelProto& model, const OnnxChunkPlan& chunk,
                                                size_t chunk_index, size_t chunk_count);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_BISECT_ONNX_BISECT_PLAN_H_
