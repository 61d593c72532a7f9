// libFuzzer target: any bytes as an ONNX model, through what the bisect planner runs on a graph:
// the ModelProto parse with its name checks, the dependency index (subgraphs, topological order)
// and every initializer's stored size and external-data reference. Errors are fine; a crash, a
// hang, unbounded recursion or an allocation beyond -rss_limit_mb is a bug. An accepted index must
// order every node exactly once.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/support/memory_object.h"
#include "workers/formats/onnx_graph.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  modelsmith::MemoryObject file(std::string(reinterpret_cast<const char*>(data), size), "fuzz.onnx");
  absl::StatusOr<onnx::ModelProto> model = modelsmith::ReadOnnxModel(file);
  if (!model.ok()) return 0;
  for (const onnx::TensorProto& tensor : model->graph().initializer()) {
    (void)modelsmith::OnnxStoredBytes(tensor);
    (void)modelsmith::OnnxExternalDataOf(tensor);
  }
  absl::StatusOr<modelsmith::OnnxGraphIndex> index = modelsmith::IndexOnnxGraph(model->graph());
  if (!index.ok()) return 0;
  const size_t nodes = static_cast<size_t>(model->graph().node_size());
  if (index->order.size() != nodes || index->reads.size() != nodes) std::abort();
  std::vector<bool> seen(nodes, false);
  for (size_t n : index->order) {
    if (n >= nodes || seen[n]) std::abort();
    seen[n] = true;
  }
  return 0;
}
