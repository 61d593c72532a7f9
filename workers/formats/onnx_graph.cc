#include "workers/formats/onnx_graph.h"

#include <queue>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "workers/common/error.h"
#include "workers/formats/tensor_name.h"

namespace modelsmith {
namespace {

absl::Status GraphError(absl::string_view message, absl::string_view node) {
  return MakeError(absl::StatusCode::kInvalidArgument, "ONNX_GRAPH_INVALID", message, {{"node", std::string(node)}});
}

// Bits per element of a TensorProto data type (onnx.proto's DataType numbers, including those
// newer than Debian's 1.12 headers: float8 17-20, uint4/int4 21-22); 0 when unknown.
uint32_t ElementBits(int32_t data_type) {
  switch (data_type) {
    case 2:
    case 3:
    case 9:
    case 17:
    case 18:
    case 19:
    case 20: return 8;  // u8 i8 bool f8*
    case 4:
    case 5:
    case 10:
    case 16: return 16;  // u16 i16 f16 bf16
    case 1:
    case 6:
    case 12: return 32;  // f32 i32 u32
    case 7:
    case 11:
    case 13:
    case 14: return 64;   // i64 f64 u64 c64
    case 15: return 128;  // c128
    case 21:
    case 22: return 4;  // u4 i4
    default: return 0;
  }
}

// Values a subgraph reads from the scopes around it: what its nodes read that neither the
// subgraph's own nodes produce nor its inputs and initializers define.
void OuterReads(const onnx::GraphProto& graph, std::set<std::string>& out) {
  std::set<std::string> defined;
  for (const auto& i : graph.input()) defined.insert(i.name());
  for (const auto& i : graph.initializer()) defined.insert(i.name());
  for (const auto& n : graph.node()) {
    for (const std::string& o : n.output()) defined.insert(o);
  }
  for (const auto& n : graph.node()) {
    std::set<std::string> reads(n.input().begin(), n.input().end());
    for (const auto& a : n.attribute()) {
      if (a.has_g()) OuterReads(a.g(), reads);
      for (const auto& g : a.graphs()) OuterReads(g, reads);
    }
    for (const std::string& r : reads) {
      if (!r.empty() && !defined.count(r)) out.insert(r);
    }
  }
}

}  // namespace

uint64_t OnnxStoredBytes(const onnx::TensorProto& tensor) {
  if (tensor.data_location() == onnx::TensorProto::EXTERNAL) {
    for (const auto& kv : tensor.external_data()) {
      uint64_t length = 0;
      if (kv.key() == "length" && absl::SimpleAtoi(kv.value(), &length)) return length;
    }
  }
  if (tensor.has_raw_data()) return tensor.raw_data().size();
  if (tensor.data_type() == onnx::TensorProto::STRING) {
    uint64_t bytes = 0;
    for (const std::string& s : tensor.string_data()) bytes += s.size();
    return bytes;
  }
  uint64_t elements = 1;
  for (int64_t d : tensor.dims()) elements *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
  return (elements * ElementBits(tensor.data_type()) + 7) / 8;
}

absl::StatusOr<std::optional<OnnxExternalData>> OnnxExternalDataOf(const onnx::TensorProto& tensor) {
  if (tensor.data_location() != onnx::TensorProto::EXTERNAL) return std::nullopt;
  OnnxExternalData ref;
  bool has_length = false;
  for (const auto& kv : tensor.external_data()) {
    if (kv.key() == "location") ref.location = kv.value();
    if (kv.key() == "offset" && !absl::SimpleAtoi(kv.value(), &ref.offset)) ref.location.clear();
    if (kv.key() == "length") has_length = absl::SimpleAtoi(kv.value(), &ref.length);
  }
  const bool climbs =
      ref.location == ".." || absl::StartsWith(ref.location, "../") || absl::StrContains(ref.location, "/../");
  if (ref.location.empty() || ref.location.front() == '/' || climbs || !has_length) {
    return MakeError(
        absl::StatusCode::kInvalidArgument, "ONNX_EXTERNAL_DATA_INVALID",
        absl::StrCat("initializer '", tensor.name(), "' has an unusable external data reference (location '",
                     ref.location,
                     "'): it needs a relative location inside the model's directory, an offset and a length"),
        {{"tensor", tensor.name()}});
  }
  return ref;
}

absl::StatusOr<onnx::ModelProto> ReadOnnxModel(const RandomAccessObject& file) {
  auto invalid = [&](absl::string_view why) {
    return MakeError(absl::StatusCode::kInvalidArgument, "ONNX_INVALID",
                     absl::StrCat("'", file.uri(), "' is not an ONNX model: ", why), {{"file", file.uri()}});
  };
  if (file.size_bytes() > kOnnxMaxModelBytes)
    return invalid("over 2 GiB (larger models keep their weights as external data)");
  std::string bytes(file.size_bytes(), '\0');
  if (absl::Status s = file.ReadAt(0, bytes.size(), reinterpret_cast<std::byte*>(bytes.data())); !s.ok()) return s;
  google::protobuf::io::CodedInputStream stream(reinterpret_cast<const uint8_t*>(bytes.data()),
                                                static_cast<int>(bytes.size()));
  stream.SetTotalBytesLimit(static_cast<int>(kOnnxMaxModelBytes));
  onnx::ModelProto model;
  if (!model.ParseFromCodedStream(&stream) || !stream.ConsumedEntireMessage())
    return invalid("the protobuf does not parse");
  if (!model.has_graph() || model.graph().node_size() == 0) return invalid("it has no graph nodes");
  // Value names are tensor names: the same limit as every other format (subgraphs included).
  std::vector<const onnx::GraphProto*> graphs = {&model.graph()};
  for (size_t g = 0; g < graphs.size(); ++g) {
    const onnx::GraphProto& graph = *graphs[g];
    for (const auto& t : graph.initializer()) {
      if (absl::Status s = CheckTensorNameLength(t.name(), file.uri()); !s.ok()) return s;
    }
    for (const auto& v : graph.input()) {
      if (absl::Status s = CheckTensorNameLength(v.name(), file.uri()); !s.ok()) return s;
    }
    for (const auto& v : graph.output()) {
      if (absl::Status s = CheckTensorNameLength(v.name(), file.uri()); !s.ok()) return s;
    }
    for (const auto& node : graph.node()) {
      for (const std::string& name : node.input()) {
        if (absl::Status s = CheckTensorNameLength(name, file.uri()); !s.ok()) return s;
      }
      for (const std::string& name : node.output()) {
        if (absl::Status s = CheckTensorNameLength(name, file.uri()); !s.ok()) return s;
      }
      for (const auto& attribute : node.attribute()) {
        if (attribute.has_g()) graphs.push_back(&attribute.g());
        for (const auto& sub : attribute.graphs()) graphs.push_back(&sub);
      }
    }
  }
  return model;
}

absl::StatusOr<OnnxGraphIndex> IndexOnnxGraph(const onnx::GraphProto& graph) {
  OnnxGraphIndex index;
  for (const auto& t : graph.initializer()) index.initializers.insert(t.name());
  for (const auto& i : graph.input()) {
    if (!index.initializers.count(i.name())) index.graph_inputs.insert(i.name());
  }
  const size_t n = graph.node_size();
  index.reads.resize(n);
  for (size_t k = 0; k < n; ++k) {
    const onnx::NodeProto& node = graph.node(k);
    std::set<std::string> reads;
    for (const std::string& in : node.input()) {
      if (!in.empty()) reads.insert(in);
    }
    for (const auto& a : node.attribute()) {
      if (a.has_g()) OuterReads(a.g(), reads);
      for (const auto& g : a.graphs()) OuterReads(g, reads);
    }
    index.reads[k].assign(reads.begin(), reads.end());
    for (const std::string& out : node.output()) {
      if (out.empty()) continue;
      if (!index.producer.emplace(out, k).second || index.initializers.count(out) || index.graph_inputs.count(out)) {
        return GraphError(absl::StrCat("value '", out, "' is defined twice (node '", node.name(), "')"), node.name());
      }
    }
  }
  std::vector<size_t> waiting(n, 0);
  for (size_t k = 0; k < n; ++k) {
    for (const std::string& r : index.reads[k]) {
      index.consumers[r].push_back(k);
      if (index.producer.count(r)) {
        ++waiting[k];
      } else if (!index.initializers.count(r) && !index.graph_inputs.count(r)) {
        return GraphError(absl::StrCat("node '", graph.node(k).name(), "' (", graph.node(k).op_type(), ") reads '", r,
                                       "', which no node, input or initializer defines"),
                          graph.node(k).name());
      }
    }
  }
  // Kahn's algorithm, taking the lowest-numbered ready node first: the file's order when it is
  // already topological, as the ONNX spec requires.
  std::priority_queue<size_t, std::vector<size_t>, std::greater<>> ready;
  for (size_t k = 0; k < n; ++k) {
    if (waiting[k] == 0) ready.push(k);
  }
  while (!ready.empty()) {
    const size_t k = ready.top();
    ready.pop();
    index.order.push_back(k);
    for (const std::string& out : graph.node(k).output()) {
      auto it = index.consumers.find(out);
      if (out.empty() || it == index.consumers.end()) continue;
      for (size_t c : it->second) {
        if (--waiting[c] == 0) ready.push(c);
      }
    }
  }
  if (index.order.size() != n) return GraphError("the graph has a cycle", "");
  return index;
}

}  // namespace modelsmith
