// An ONNX model (onnx/onnx.proto, through Debian's libonnx-dev) read for bisection: the ModelProto,
// each initializer's stored size and where its bytes are (inline, or a range of an external data
// file), and the graph's nodes in a checked topological order with their dependencies.
//
// External data (onnx/external_data_helper.py): an initializer with data_location EXTERNAL carries
// "location" (a path relative to the model's directory), "offset" and "length" in external_data.
// A location that is absolute, climbs out of the directory ("..") or names a missing file is
// INVALID_ARGUMENT (ONNX_EXTERNAL_DATA_INVALID), as is a range past the file's end.
//
// Node dependencies include the outer-scope values that a node's subgraphs (If, Loop, Scan) read.
// A graph that is not a DAG, or a node that reads a value nothing produces, is INVALID_ARGUMENT
// (ONNX_GRAPH_INVALID) naming the node and the value.
#ifndef MODELSMITH_WORKERS_FORMATS_ONNX_GRAPH_H_
#define MODELSMITH_WORKERS_FORMATS_ONNX_GRAPH_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

inline constexpr uint64_t kOnnxMaxModelBytes = (uint64_t{2} << 30) - 1;  // protobuf's limit

struct OnnxExternalData {
  std::string location;  // relative to the model's directory
  uint64_t offset = 0;
  uint64_t length = 0;
};

// The bytes an initializer's data occupies (raw_data, typed fields at their element size, or the
// external range's length).
uint64_t OnnxStoredBytes(const onnx::TensorProto& tensor);

// nullopt for inline data; the parsed reference otherwise (INVALID_ARGUMENT when malformed).
absl::StatusOr<std::optional<OnnxExternalData>> OnnxExternalDataOf(const onnx::TensorProto& tensor);

// Parses the model file (at most kOnnxMaxModelBytes). INVALID_ARGUMENT (ONNX_INVALID) naming the
// file when it is not a ModelProto with a graph.
absl::StatusOr<onnx::ModelProto> ReadOnnxModel(const RandomAccessObject& file);

struct OnnxGraphIndex {
  std::vector<size_t> order;                             // node indices, topological, stable
  std::vector<std::vector<std::string>> reads;           // per node: every value it reads (subgraphs' too)
  std::map<std::string, size_t> producer;                // value -> node index
  std::map<std::string, std::vector<size_t>> consumers;  // value -> node indices
  std::set<std::string> initializers;
  std::set<std::string> graph_inputs;  // graph inputs that are not initializers
};

absl::StatusOr<OnnxGraphIndex> IndexOnnxGraph(const onnx::GraphProto& graph);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_ONNX_GRAPH_H_
