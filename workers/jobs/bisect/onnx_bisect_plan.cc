#include "workers/jobs/bisect/onnx_bisect_plan.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "onnx/shape_inference/implementation.h"
#include "workers/common/error.h"
#include "workers/jobs/bisect/bisect_plan.h"

namespace modelsmith {
namespace {

constexpr uint64_t kUnreachable = std::numeric_limits<uint64_t>::max();

bool HasSubgraph(const onnx::NodeProto& node) {
  for (const auto& a : node.attribute()) {
    if (a.has_g() || a.graphs_size() > 0) return true;
  }
  return false;
}

// The fewest crossing tensors of a split into `chunks` runs of at most `cap` (kUnreachable when
// there is none), with each chunk's end written to `ends`. Dynamic programming over positions,
// the window of feasible previous cuts kept as a monotone deque: O(chunks x positions).
uint64_t FewestCrossings(std::span<const uint64_t> sizes, std::span<const uint32_t> crossings, size_t chunks,
                         uint64_t cap, std::vector<size_t>* ends) {
  const size_t n = sizes.size();
  std::vector<uint64_t> prefix(n + 1, 0);
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + sizes[i];
  std::vector<uint64_t> previous(n + 1, kUnreachable), current(n + 1, kUnreachable);
  // Parents only when the split itself is wanted: the binary search over caps needs just the count.
  std::vector<std::vector<size_t>> parent(ends != nullptr ? chunks : 0, std::vector<size_t>(n + 1, 0));
  for (size_t j = 1; j <= n; ++j) previous[j] = prefix[j] <= cap ? 0 : kUnreachable;
  for (size_t k = 1; k < chunks; ++k) {
    std::fill(current.begin(), current.end(), kUnreachable);
    std::deque<size_t> window;  // candidate cuts i, cost(i) increasing
    size_t next = k;            // the next i to offer
    size_t low = 0;
    auto cost = [&](size_t i) { return previous[i] == kUnreachable ? kUnreachable : previous[i] + crossings[i - 1]; };
    for (size_t j = k + 1; j <= n; ++j) {
      for (; next < j; ++next) {
        const uint64_t c = cost(next);
        while (!window.empty() && cost(window.back()) >= c) window.pop_back();
        window.push_back(next);
      }
      while (low < j && prefix[j] - prefix[low] > cap) ++low;
      while (!window.empty() && window.front() < low) window.pop_front();
      if (!window.empty() && cost(window.front()) != kUnreachable) {
        current[j] = cost(window.front());
        if (ends != nullptr) parent[k][j] = window.front();
      }
    }
    std::swap(previous, current);
  }
  if (previous[n] == kUnreachable) return kUnreachable;
  if (ends != nullptr) {
    ends->assign(chunks, n);
    for (size_t k = chunks - 1, j = n; k > 0; --k) {
      j = parent[k][j];
      (*ends)[k - 1] = j;
    }
  }
  return previous[n];
}

// Type information for a value: the graph's inputs, outputs and value_info after inference.
std::map<std::string, const onnx::ValueInfoProto*> ValueInfos(const onnx::GraphProto& graph) {
  std::map<std::string, const onnx::ValueInfoProto*> infos;
  for (const auto& v : graph.value_info()) infos[v.name()] = &v;
  for (const auto& v : graph.input()) infos[v.name()] = &v;
  for (const auto& v : graph.output()) infos[v.name()] = &v;
  return infos;
}

// An element type and a shape (of known rank; dimensions may be symbolic): what a model's inputs and
// outputs must declare.
bool Typed(const onnx::ValueInfoProto& v) {
  return v.has_type() && v.type().has_tensor_type() && v.type().tensor_type().elem_type() != 0 &&
         v.type().tensor_type().has_shape();
}

}  // namespace

void InferOnnxTypes(onnx::ModelProto& model) {
  // Inference stops at an op it does not know, and keeps a type without a shape where one input was
  // unknown; each round starts over from the inputs with the MatMulNBits outputs typed so far.
  std::vector<onnx::ValueInfoProto> typed_by_us;
  for (int round = 0; round < 64; ++round) {
    model.mutable_graph()->clear_value_info();
    for (const auto& v : typed_by_us) *model.mutable_graph()->add_value_info() = v;
    try {
      onnx::shape_inference::InferShapes(model);
    } catch (const std::exception&) {
      // Inference is best effort here: a value it cannot type is reported when a cut needs it.
    }
    const auto infos = ValueInfos(model.graph());
    std::vector<onnx::ValueInfoProto> added;
    for (const auto& node : model.graph().node()) {
      if (node.domain() != "com.microsoft" || node.op_type() != "MatMulNBits" || node.output_size() == 0 ||
          node.input_size() == 0)
        continue;
      auto out = infos.find(node.output(0));
      auto a = infos.find(node.input(0));
      if ((out != infos.end() && Typed(*out->second)) || a == infos.end() || !Typed(*a->second)) continue;
      int64_t n = -1;
      for (const auto& attr : node.attribute()) {
        if (attr.name() == "N") n = attr.i();
      }
      onnx::ValueInfoProto v;
      v.set_name(node.output(0));
      *v.mutable_type() = a->second->type();
      auto* shape = v.mutable_type()->mutable_tensor_type()->mutable_shape();
      if (shape->dim_size() == 0 || n <= 0) continue;  // [..., K] -> [..., N]
      shape->mutable_dim(shape->dim_size() - 1)->Clear();
      shape->mutable_dim(shape->dim_size() - 1)->set_dim_value(n);
      added.push_back(std::move(v));
    }
    if (added.empty()) return;
    for (auto& v : added) typed_by_us.push_back(std::move(v));
  }
}

std::vector<size_t> ChooseOnnxCuts(std::span<const uint64_t> sizes, std::span<const uint32_t> crossings,
                                   size_t chunks) {
  const uint64_t best = BestLargestChunk(sizes, chunks);
  const uint64_t loosest = best + static_cast<uint64_t>(std::floor(static_cast<double>(best) * kOnnxBalanceSlack));
  const size_t n = sizes.size();
  if (chunks == 1) return {n};
  // The usual case: cut only where the fewest tensors cross anywhere (a transformer's residual
  // stream between blocks), balancing the segments between those places as the checkpoint bisect
  // does. Taken when it stays within the slack.
  const uint32_t fewest_anywhere = *std::min_element(crossings.begin(), crossings.end() - 1);
  std::vector<size_t> boundaries;  // segment ends
  std::vector<uint64_t> segments;
  uint64_t running = 0;
  for (size_t p = 0; p < n; ++p) {
    running += sizes[p];
    if (p + 1 == n || crossings[p] == fewest_anywhere)
      boundaries.push_back(p + 1), segments.push_back(running), running = 0;
  }
  if (segments.size() >= chunks && BestLargestChunk(segments, chunks) <= loosest) {
    std::vector<size_t> ends;
    for (size_t segment_end : PartitionMinMax(segments, chunks)) ends.push_back(boundaries[segment_end - 1]);
    return ends;
  }
  const uint64_t fewest = FewestCrossings(sizes, crossings, chunks, loosest, nullptr);
  // The tightest cap that still allows that few crossings: the best balance among those splits.
  uint64_t low = best, high = loosest;
  while (low < high) {
    const uint64_t mid = low + (high - low) / 2;
    if (FewestCrossings(sizes, crossings, chunks, mid, nullptr) <= fewest) {
      high = mid;
    } else {
      low = mid + 1;
    }
  }
  std::vector<size_t> ends;
  FewestCrossings(sizes, crossings, chunks, low, &ends);
  return ends;
}

absl::StatusOr<OnnxBisectPlan> PlanOnnxBisect(const onnx::ModelProto& model, size_t chunks) {
  const onnx::GraphProto& graph = model.graph();
  absl::StatusOr<OnnxGraphIndex> index = IndexOnnxGraph(graph);
  if (!index.ok()) return index.status();
  OnnxBisectPlan plan;

  // Constants and positions, in topological order.
  std::set<std::string> constant_values = index->initializers;
  std::vector<bool> constant_node(graph.node_size(), false);
  std::vector<size_t> position_of(graph.node_size(), kUnreachable);
  for (size_t k : index->order) {
    const onnx::NodeProto& node = graph.node(k);
    const bool all_constant =
        !index->reads[k].empty() && std::all_of(index->reads[k].begin(), index->reads[k].end(),
                                                [&](const std::string& r) { return constant_values.count(r) > 0; });
    constant_node[k] = (node.op_type() == "Constant" && node.domain().empty()) || (all_constant && !HasSubgraph(node));
    if (constant_node[k]) {
      for (const std::string& out : node.output()) constant_values.insert(out);
    } else {
      position_of[k] = plan.positions.size();
      plan.positions.push_back(k);
    }
  }
  const size_t positions = plan.positions.size();
  if (chunks > positions) {
    return MakeError(absl::StatusCode::kInvalidArgument, "BISECT_TOO_MANY_CHUNKS",
                     absl::StrCat("'bisect.chunks' is ", chunks, " but the graph has only ", positions,
                                  " computing node(s) to cut between (each chunk needs at least one)"),
                     {{"field", "bisect.chunks"}});
  }
  std::set<std::string> graph_outputs;
  for (const auto& o : graph.output()) graph_outputs.insert(o.name());

  // The first real consumer of each constant value, through constant chains.
  std::map<std::string, uint64_t> first_use;
  std::function<uint64_t(const std::string&)> first_real = [&](const std::string& value) -> uint64_t {
    if (auto it = first_use.find(value); it != first_use.end()) return it->second;
    uint64_t first = graph_outputs.count(value) ? positions - 1 : kUnreachable;
    first_use[value] = first;  // a guard against cycles through constants (none in a DAG)
    if (auto consumers = index->consumers.find(value); consumers != index->consumers.end()) {
      for (size_t c : consumers->second) {
        if (!constant_node[c]) {
          first = std::min<uint64_t>(first, position_of[c]);
        } else {
          for (const std::string& out : graph.node(c).output()) {
            if (!out.empty()) first = std::min(first, first_real(out));
          }
        }
      }
    }
    return first_use[value] = first;
  };
  plan.position_bytes.assign(positions, 0);
  for (const auto& t : graph.initializer()) {
    const uint64_t at = first_real(t.name());
    if (at != kUnreachable) plan.position_bytes[at] += OnnxStoredBytes(t);
  }
  for (size_t k = 0; k < static_cast<size_t>(graph.node_size()); ++k) {
    const onnx::NodeProto& node = graph.node(k);
    if (node.op_type() != "Constant" || node.output_size() == 0) continue;
    const uint64_t at = first_real(node.output(0));
    for (const auto& a : node.attribute()) {
      if (a.has_t() && at != kUnreachable) plan.position_bytes[at] += OnnxStoredBytes(a.t());
    }
  }
  for (uint64_t b : plan.position_bytes) plan.total_bytes += b;

  // Crossings: a value made at position a and last read at position b crosses cuts a .. b-1.
  std::vector<int64_t> delta(positions + 1, 0);
  for (size_t p = 0; p < positions; ++p) {
    for (const std::string& out : graph.node(plan.positions[p]).output()) {
      auto consumers = index->consumers.find(out);
      if (out.empty() || consumers == index->consumers.end()) continue;
      size_t last = p;
      for (size_t c : consumers->second) {
        if (!constant_node[c]) last = std::max<size_t>(last, position_of[c]);
      }
      if (last > p) ++delta[p], --delta[last];
    }
  }
  plan.crossings.assign(positions, 0);
  for (size_t p = 0, running = 0; p < positions; ++p) {
    running += delta[p];
    plan.crossings[p] = static_cast<uint32_t>(running);
  }

  const std::vector<size_t> ends = ChooseOnnxCuts(plan.position_bytes, plan.crossings, chunks);
  std::vector<size_t> topo_rank(graph.node_size());
  for (size_t r = 0; r < index->order.size(); ++r) topo_rank[index->order[r]] = r;
  std::map<std::string, size_t> initializer_rank;
  for (int i = 0; i < graph.initializer_size(); ++i) initializer_rank[graph.initializer(i).name()] = i;
  for (size_t k = 0, begin = 0; k < ends.size(); begin = ends[k++]) {
    OnnxChunkPlan chunk;
    chunk.first_position = begin;
    chunk.end_position = ends[k];
    std::set<size_t> nodes;
    std::set<std::string> initializers, graph_inputs, crossing_in;
    std::function<void(size_t)> need_node = [&](size_t node) {
      if (!nodes.insert(node).second) return;
      for (const std::string& r : index->reads[node]) {
        if (index->initializers.count(r)) {
          initializers.insert(r);
        } else if (index->graph_inputs.count(r)) {
          graph_inputs.insert(r);
        } else if (const size_t producer = index->producer.at(r); constant_node[producer]) {
          need_node(producer);
        } else if (position_of[producer] < begin) {
          crossing_in.insert(r);
        }
      }
    };
    for (size_t p = begin; p < ends[k]; ++p) {
      need_node(plan.positions[p]);
      chunk.size_bytes += plan.position_bytes[p];
    }
    const bool last_chunk = k + 1 == ends.size();
    for (const auto& o : graph.output()) {  // constant graph outputs go with the last chunk
      if (!last_chunk || index->graph_inputs.count(o.name())) continue;
      if (index->initializers.count(o.name())) initializers.insert(o.name());
      if (auto producer = index->producer.find(o.name());
          producer != index->producer.end() && constant_node[producer->second]) {
        need_node(producer->second);
      }
    }
    chunk.nodes.assign(nodes.begin(), nodes.end());
    std::sort(chunk.nodes.begin(), chunk.nodes.end(), [&](size_t a, size_t b) { return topo_rank[a] < topo_rank[b]; });
    chunk.initializers.assign(initializers.begin(), initializers.end());
    std::sort(chunk.initializers.begin(), chunk.initializers.end(),
              [&](const std::string& a, const std::string& b) { return initializer_rank[a] < initializer_rank[b]; });
    for (const auto& i : graph.input()) {
      if (graph_inputs.count(i.name())) chunk.inputs.push_back(i.name());
    }
    // Crossing tensors in the order their producers run.
    std::vector<std::string> in(crossing_in.begin(), crossing_in.end());
    std::sort(in.begin(), in.end(), [&](const std::string& a, const std::string& b) {
      return std::make_pair(topo_rank[index->producer.at(a)], a) < std::make_pair(topo_rank[index->producer.at(b)], b);
    });
    chunk.crossing_in = in;
    chunk.inputs.insert(chunk.inputs.end(), in.begin(), in.end());
    for (size_t node : chunk.nodes) {
      if (constant_node[node]) continue;
      for (const std::string& out : graph.node(node).output()) {
        auto consumers = index->consumers.find(out);
        if (out.empty() || consumers == index->consumers.end() || graph_outputs.count(out)) continue;
        const bool read_later = std::any_of(consumers->second.begin(), consumers->second.end(),
                                            [&](size_t c) { return !constant_node[c] && position_of[c] >= ends[k]; });
        if (read_later) chunk.outputs.push_back(out);
      }
    }
    for (const auto& o : graph.output()) {
      auto producer = index->producer.find(o.name());
      const bool made_here = producer != index->producer.end() && nodes.count(producer->second) &&
                             (!constant_node[producer->second] || last_chunk);
      if (made_here || (last_chunk && initializers.count(o.name()))) chunk.outputs.push_back(o.name());
    }
    plan.chunks.push_back(std::move(chunk));
  }
  return plan;
}

absl::StatusOr<onnx::ModelProto> BuildOnnxChunk(const onnx::ModelProto& model, const OnnxChunkPlan& chunk,
                                                size_t chunk_index, size_t chunk_count) {
  onnx::ModelProto out;
  out.set_ir_version(model.ir_version());
  *out.mutable_opset_import() = model.opset_import();
  out.set_producer_name(model.producer_name());
  out.set_producer_version(model.producer_version());
  out.set_domain(model.domain());
  out.set_model_version(model.model_version());
  out.set_doc_string(model.doc_string());
  *out.mutable_metadata_props() = model.metadata_props();
  *out.mutable_functions() = model.functions();
  auto* chunk_prop = out.add_metadata_props();
  chunk_prop->set_key("modelsmith.bisect.chunk");
  chunk_prop->set_value(absl::StrCat(chunk_index + 1, "/", chunk_count));

  const onnx::GraphProto& graph = model.graph();
  onnx::GraphProto* g = out.mutable_graph();
  g->set_name(absl::StrCat(graph.name(), "_chunk", chunk_index + 1));
  for (size_t node : chunk.nodes) *g->add_node() = graph.node(node);
  std::set<std::string> wanted(chunk.initializers.begin(), chunk.initializers.end());
  for (const auto& t : graph.initializer()) {
    if (wanted.count(t.name())) *g->add_initializer() = t;
  }
  const auto infos = ValueInfos(graph);
  auto typed = [&](const std::string& name) -> absl::StatusOr<onnx::ValueInfoProto> {
    auto it = infos.find(name);
    if (it == infos.end() || !Typed(*it->second)) {
      return MakeError(
          absl::StatusCode::kFailedPrecondition, "ONNX_TYPE_UNKNOWN",
          absl::StrCat("tensor '", name, "' crosses into or out of chunk ", chunk_index + 1,
                       " but shape inference could not give its type; a chunk's inputs and outputs need one"),
          {{"tensor", name}});
    }
    return *it->second;
  };
  for (const std::string& name : chunk.inputs) {
    absl::StatusOr<onnx::ValueInfoProto> v = typed(name);
    if (!v.ok()) return v.status();
    *g->add_input() = *std::move(v);
  }
  for (const std::string& name : chunk.outputs) {
    absl::StatusOr<onnx::ValueInfoProto> v = typed(name);
    if (!v.ok()) return v.status();
    *g->add_output() = *std::move(v);
  }
  std::set<std::string> boundary(chunk.inputs.begin(), chunk.inputs.end());
  boundary.insert(chunk.outputs.begin(), chunk.outputs.end());
  for (const auto& node : g->node()) {
    for (const std::string& o : node.output()) {
      auto it = infos.find(o);
      if (!o.empty() && !boundary.count(o) && it != infos.end()) *g->add_value_info() = *it->second;
    }
  }
  return out;
}

}  // namespace modelsmith
