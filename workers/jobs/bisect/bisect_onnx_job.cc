#include "workers/jobs/bisect/bisect_onnx_job.h"

#include <chrono>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "workers/common/error.h"
#include "workers/formats/onnx_graph.h"
#include "workers/jobs/bisect/bisect_job.h"
#include "workers/jobs/bisect/bisect_plan.h"
#include "workers/jobs/bisect/onnx_bisect_plan.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/core/publication.h"
#include "workers/storage/pipelined_writer.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

constexpr uint64_t kInlineLimitBytes = uint64_t{1} << 30;
constexpr uint64_t kExternalAlignment = 4096;
constexpr uint64_t kOnnxBaseMemoryBytes = 96 << 20;

struct OnnxInput {
  Location location;
  std::unique_ptr<RandomAccessObject> file;
  onnx::ModelProto model;
  std::map<std::string, std::unique_ptr<RandomAccessObject>> data_files;  // by location
  bool any_external = false;
};

absl::Status WithField(const absl::Status& s) { return WithReason(s, ReasonOf(s), {{"field", "bisect.input"}}); }

absl::StatusOr<OnnxInput> OpenOnnxInput(const v1::BisectSpec& spec, const StorageRouter& router) {
  OnnxInput input;
  absl::StatusOr<Location> location = router.Resolve(spec.input());
  if (!location.ok()) return WithField(location.status());
  input.location = *location;
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> file = location->store->OpenForRead(location->uri);
  if (!file.ok()) return WithField(file.status());
  input.file = *std::move(file);
  absl::StatusOr<onnx::ModelProto> model = ReadOnnxModel(*input.file);
  if (!model.ok()) return WithField(model.status());
  input.model = *std::move(model);
  const std::string directory(ParentUri(location->uri));
  for (const auto& t : input.model.graph().initializer()) {
    absl::StatusOr<std::optional<OnnxExternalData>> ref = OnnxExternalDataOf(t);
    if (!ref.ok()) return WithField(ref.status());
    if (!*ref) continue;
    input.any_external = true;
    auto [it, added] = input.data_files.try_emplace((*ref)->location);
    if (added) {
      absl::StatusOr<std::unique_ptr<RandomAccessObject>> data =
          location->store->OpenForRead(directory + "/" + (*ref)->location);
      if (!data.ok()) {
        return MakeError(absl::StatusCode::kInvalidArgument, "ONNX_EXTERNAL_DATA_INVALID",
                         absl::StrCat("initializer '", t.name(), "' keeps its data in '", (*ref)->location,
                                      "', which cannot be read: ", data.status().message()),
                         {{"field", "bisect.input"}, {"tensor", t.name()}});
      }
      it->second = *std::move(data);
    }
    if ((*ref)->offset > it->second->size_bytes() || (*ref)->length > it->second->size_bytes() - (*ref)->offset) {
      return MakeError(absl::StatusCode::kInvalidArgument, "ONNX_EXTERNAL_DATA_INVALID",
                       absl::StrCat("initializer '", t.name(), "' lies past the end of '", (*ref)->location, "'"),
                       {{"field", "bisect.input"}, {"tensor", t.name()}});
    }
  }
  return input;
}

std::string Stem(const std::string& uri) {
  std::string name(BaseName(uri));
  return absl::EndsWith(name, ".onnx") ? name.substr(0, name.size() - 5) : name;
}

absl::Status AppendZeros(PipelinedWriter& out, uint64_t count) {
  static const std::byte kZeros[kExternalAlignment] = {};
  return out.Append({kZeros, static_cast<size_t>(count)});
}

// Moves the chunk's initializers into `out` as external data named `data_name`, rewriting their
// references; returns the data file's size.
absl::StatusOr<uint64_t> WriteExternalData(onnx::ModelProto& chunk, const OnnxInput& input,
                                           const std::string& data_name, PipelinedWriter& out, ProgressTracker& tracker,
                                           RateLimiter& pace, const JobContext& context) {
  uint64_t offset = 0;
  for (onnx::TensorProto& t : *chunk.mutable_graph()->mutable_initializer()) {
    absl::StatusOr<std::optional<OnnxExternalData>> ref = OnnxExternalDataOf(t);
    if (!ref.ok()) return ref.status();
    if (!*ref && !t.has_raw_data()) continue;  // typed fields stay inline: small by nature
    const uint64_t padding = (kExternalAlignment - offset % kExternalAlignment) % kExternalAlignment;
    if (absl::Status s = AppendZeros(out, padding); !s.ok()) return s;
    offset += padding;
    uint64_t length = 0;
    if (*ref) {
      length = (*ref)->length;
      const RandomAccessObject& source = *input.data_files.at((*ref)->location);
      if (absl::Status s = CopyByteRange(source, (*ref)->offset, length, out, tracker, pace, context); !s.ok()) {
        return Annotate(s, absl::StrCat("copying initializer '", t.name(), "'"));
      }
    } else {
      length = t.raw_data().size();
      if (absl::Status s = out.Append({reinterpret_cast<const std::byte*>(t.raw_data().data()), t.raw_data().size()});
          !s.ok())
        return s;
      tracker.AddBytes(length);
      t.clear_raw_data();
    }
    t.clear_external_data();
    t.set_data_location(onnx::TensorProto::EXTERNAL);
    for (const auto& [key, value] : {std::pair<const char*, std::string>{"location", data_name},
                                     {"offset", std::to_string(offset)},
                                     {"length", std::to_string(length)}}) {
      auto* kv = t.add_external_data();
      kv->set_key(key);
      kv->set_value(value);
    }
    offset += length;
  }
  return offset;
}

ObjectChecker ModelCheck(const onnx::ModelProto& planned) {
  return [nodes = planned.graph().node_size(), inputs = planned.graph().input_size(),
          outputs = planned.graph().output_size()](const RandomAccessObject& written) -> absl::Status {
    absl::StatusOr<onnx::ModelProto> read = ReadOnnxModel(written);
    if (!read.ok()) return Annotate(read.status(), "verifying the written chunk");
    if (read->graph().node_size() != nodes || read->graph().input_size() != inputs ||
        read->graph().output_size() != outputs) {
      return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                       absl::StrCat("chunk '", written.uri(), "' does not read back as planned"));
    }
    return absl::OkStatus();
  };
}

}  // namespace

bool IsOnnxInput(absl::string_view uri) { return absl::EndsWith(uri, ".onnx"); }

struct OnnxBisectJobPlan {
  OnnxInput input;
  OnnxBisectPlan plan;
};

absl::StatusOr<std::shared_ptr<OnnxBisectJobPlan>> MakeOnnxBisectPlan(const v1::BisectSpec& spec, size_t chunks,
                                                                      const PlanEnv& env,
                                                                      uint64_t* estimated_peak_bytes) {
  absl::StatusOr<OnnxInput> input = OpenOnnxInput(spec, env.router);
  if (!input.ok()) return input.status();
  InferOnnxTypes(input->model);
  absl::StatusOr<OnnxBisectPlan> plan = PlanOnnxBisect(input->model, chunks);
  if (!plan.ok()) return plan.status();
  const bool replace = spec.overwrite() || env.attempt > 1;
  if (absl::Status s = Publication::CheckDirectoryVacant(env.router, spec.output(), replace, "bisect.output");
      !s.ok()) {
    return s;
  }
  // The model is held twice at most (the original and one chunk being built).
  *estimated_peak_bytes = kOnnxBaseMemoryBytes + 2 * input->file->size_bytes();
  return std::make_shared<OnnxBisectJobPlan>(OnnxBisectJobPlan{*std::move(input), *std::move(plan)});
}

absl::StatusOr<v1::JobResult> ProduceOnnxBisect(OnnxBisectJobPlan& job_plan, const JobRun& run, JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  const v1::BisectSpec& spec = run.spec.bisect();
  OnnxInput* input = &job_plan.input;
  OnnxBisectPlan* plan = &job_plan.plan;
  const size_t chunk_count = plan->chunks.size();

  ProgressTracker tracker(context, plan->total_bytes, input->model.graph().initializer_size());
  tracker.SetPhase("plan");
  absl::StatusOr<Publication> output =
      Publication::ForDirectory(*run.router, spec.output(), spec.overwrite(), run.attempt, "bisect.output");
  if (!output.ok()) return output.status();
  const std::string stem = Stem(input->location.uri);
  context.Log(
      absl::StrFormat("splitting ONNX graph '%s' (%d nodes, %d computing, %d initializer bytes) into %d chunks at '%s'",
                      input->location.uri, input->model.graph().node_size(), plan->positions.size(), plan->total_bytes,
                      chunk_count, output->uri()));

  RateLimiter pace(run.io_bytes_per_second);
  ordered_json chunks_json = ordered_json::array();
  for (size_t k = 0; k < plan->chunks.size(); ++k) {
    const OnnxChunkPlan& chunk = plan->chunks[k];
    tracker.SetPhase("execute");
    absl::StatusOr<onnx::ModelProto> model = BuildOnnxChunk(input->model, chunk, k, plan->chunks.size());
    if (!model.ok()) return model.status();
    const std::string name = absl::StrCat(stem, "-chunk", k + 1, "-of-", plan->chunks.size(), ".onnx");
    ordered_json entry = {{"index", k + 1}, {"file", name}, {"size_bytes", chunk.size_bytes}};
    const bool external = input->any_external || chunk.size_bytes > kInlineLimitBytes;
    if (external) {
      const std::string data_name = name + ".data";
      absl::StatusOr<v1::Artifact> artifact = output->Write(
          output->UriOf(data_name), "chunk_data",
          [&](PipelinedWriter& out) -> absl::StatusOr<WrittenObject> {
            absl::StatusOr<uint64_t> size = WriteExternalData(*model, *input, data_name, out, tracker, pace, context);
            if (!size.ok()) return size.status();
            // Every range was compared as it was written; a data file has no header to read back.
            return WrittenObject{*size, [](const RandomAccessObject&) { return absl::OkStatus(); }};
          },
          tracker, context);
      if (!artifact.ok()) return artifact.status();
      entry["data_file"] = data_name;
    } else {
      for (const auto& t : model->graph().initializer()) tracker.AddBytes(OnnxStoredBytes(t));
    }
    std::string bytes;
    if (!model->SerializeToString(&bytes) || bytes.size() > kOnnxMaxModelBytes) {
      return MakeError(
          absl::StatusCode::kFailedPrecondition, "ONNX_CHUNK_TOO_LARGE",
          absl::StrCat("chunk ", k + 1, " does not fit one protobuf (2 GiB); its weights need external data"));
    }
    absl::StatusOr<v1::Artifact> artifact = output->Write(
        output->UriOf(name), "chunk",
        [&](PipelinedWriter& out) -> absl::StatusOr<WrittenObject> {
          if (absl::Status s = out.Append({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}); !s.ok())
            return s;
          return WrittenObject{bytes.size(), ModelCheck(*model)};
        },
        tracker, context);
    if (!artifact.ok()) return artifact.status();
    tracker.AddTensors(model->graph().initializer_size());
    entry["file_bytes"] = artifact->size_bytes();
    entry["sha256"] = "";  // known once committed, below
    entry["nodes"] = model->graph().node_size();
    entry["inputs"] = chunk.inputs;
    entry["outputs"] = chunk.outputs;
    entry["crossing_in"] = chunk.crossing_in;
    chunks_json.push_back(std::move(entry));
  }

  // The index lists every chunk's SHA-256, which a store that verifies after commit has only then.
  if (absl::Status s = output->Commit(tracker, context); !s.ok()) return s;
  const std::vector<v1::Artifact> artifacts = output->artifacts();
  for (ordered_json& entry : chunks_json) {
    for (const v1::Artifact& a : artifacts) {
      if (BaseName(a.uri()) == entry["file"].get<std::string>()) entry["sha256"] = a.sha256();
    }
  }
  std::vector<uint64_t> sizes, file_bytes;
  for (const OnnxChunkPlan& c : plan->chunks) sizes.push_back(c.size_bytes);
  for (const v1::Artifact& a : artifacts) {
    if (a.role() == "chunk") file_bytes.push_back(a.size_bytes());
  }
  const double imbalance = ImbalanceRatio(sizes);
  ordered_json index;
  index["format"] = "onnx";
  index["source"] = input->location.uri;
  index["granularity"] = "node";
  index["total_size"] = plan->total_bytes;
  index["imbalance_ratio"] = imbalance;
  index["chunks"] = std::move(chunks_json);
  const std::string index_name = stem + ".chunks.json";
  absl::StatusOr<v1::Artifact> index_artifact =
      output->WriteSmall(output->UriOf(index_name), index.dump(2) + "\n", "index");
  if (!index_artifact.ok()) return index_artifact.status();

  v1::JobResult result;
  v1::JobFigures* figures = result.mutable_figures();
  v1::BisectFigures* bisect = figures->mutable_bisect();
  *bisect = MakeBisectFigures(sizes, file_bytes, "node", plan->positions.size());
  for (size_t k = 1; k < plan->chunks.size(); ++k) bisect->add_crossing_tensors(plan->chunks[k].crossing_in.size());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  figures->set_duration_seconds(seconds);
  figures->set_bytes_read(input->file->size_bytes() + (input->any_external ? plan->total_bytes : 0));
  figures->set_tensors(input->model.graph().initializer_size());
  figures->set_throughput_bytes_per_second(seconds > 0 ? figures->bytes_read() / seconds : 0);
  tracker.Flush();
  figures->set_peak_resident_bytes(tracker.peak_resident_bytes());

  ordered_json manifest = ManifestHeader(run, "bisect");
  manifest["input"] = {{"uri", input->location.uri},
                       {"format", "onnx"},
                       {"nodes", input->model.graph().node_size()},
                       {"initializer_bytes", plan->total_bytes}};
  manifest["figures"] = MessageJson(*figures);
  if (absl::Status s = output->Publish(std::move(manifest), result, tracker, context); !s.ok()) return s;
  return result;
}

}  // namespace modelsmith
