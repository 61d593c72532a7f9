#include "workers/jobs/bisect/bisect_job.h"

#include <algorithm>
#include <chrono>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "workers/common/error.h"
#include "workers/formats/model_view.h"
#include "workers/formats/quantized_layout.h"
#include "workers/formats/coreml_package.h"
#include "workers/jobs/bisect/bisect_chunk_writer.h"
#include "workers/jobs/bisect/bisect_coreml_job.h"
#include "workers/jobs/bisect/bisect_onnx_job.h"
#include "workers/jobs/bisect/bisect_plan.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/storage/checksum.h"
#include "workers/storage/pipelined_writer.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

// Fixed memory beyond the headers: the writer's queue and its compare buffers, read pieces.
constexpr uint64_t kBisectBaseMemoryBytes = 96 << 20;

uint32_t ChunkCount(const v1::BisectSpec& spec) { return spec.chunks() == 0 ? kDefaultBisectChunks : spec.chunks(); }

absl::string_view GranularityName(v1::BisectGranularity g) {
  switch (g) {
    case v1::BISECT_GRANULARITY_MODULE: return "module";
    case v1::BISECT_GRANULARITY_TENSOR: return "tensor";
    default: return "block";
  }
}

v1::BisectGranularity Granularity(const v1::BisectSpec& spec) {
  return spec.granularity() == v1::BISECT_GRANULARITY_UNSPECIFIED ? v1::BISECT_GRANULARITY_BLOCK : spec.granularity();
}

absl::StatusOr<ModelView> OpenInput(const v1::BisectSpec& spec, const StorageRouter& router) {
  absl::StatusOr<Location> input = router.Resolve(spec.input());
  if (!input.ok()) return WithReason(input.status(), ReasonOf(input.status()), {{"field", "bisect.input"}});
  absl::StatusOr<ModelView> model = OpenModel(*input);
  if (!model.ok()) return WithReason(model.status(), ReasonOf(model.status()), {{"field", "bisect.input"}});
  if (model->tensors.empty()) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "MODEL_EMPTY",
                     absl::StrCat("input '", model->uri, "' holds no tensors; there is nothing to split"),
                     {{"field", "bisect.input"}});
  }
  return model;
}

// The output files' stem and extension, from the input's names: "model" and ".safetensors" for
// "model.safetensors" or "model.safetensors.index.json", "model.fp16" for a variant index, the
// gguf-split prefix for a split GGUF.
std::pair<std::string, std::string> StemAndExtension(const ModelView& model) {
  const std::string first(BaseName(model.files.front().uri));
  const size_t dot = first.rfind('.');
  std::string ext = dot == std::string::npos ? "" : first.substr(dot);
  std::string stem = first.substr(0, dot);
  if (!model.index_uri.empty()) {
    // "<stem><ext>.index.json" or "<stem><ext>.index.<variant>.json"
    const std::string index(BaseName(model.index_uri));
    const size_t at = index.find(ext + ".index.");
    if (at != std::string::npos) {
      stem = index.substr(0, at);
      const std::string rest = index.substr(at + ext.size() + 7);  // "json" or "<variant>.json"
      if (rest != "json" && absl::EndsWith(rest, ".json")) absl::StrAppend(&stem, ".", rest.substr(0, rest.size() - 5));
    }
  } else if (model.gguf && model.files.size() > 1 && stem.size() > 15) {
    stem = stem.substr(0, stem.size() - 15);  // "-00001-of-00003"
  }
  return {stem, ext};
}

struct PlannedChunk {
  std::string name;                 // file name
  std::vector<size_t> units;        // indices into BisectPlan::units
  std::vector<TensorInfo> tensors;  // execution order
  uint64_t size_bytes = 0;          // stored tensor bytes
};

struct BisectPlan {
  std::vector<TensorInfo> tensors;  // the model's, then a copy of each torch alias under its name
  std::vector<BisectUnit> units;
  std::vector<PlannedChunk> chunks;
  std::string stem;
  uint64_t total_bytes = 0;
};

absl::StatusOr<BisectPlan> PlanBisect(const v1::BisectSpec& spec, const ModelView& model) {
  BisectPlan plan;
  plan.tensors = model.tensors;
  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < model.tensors.size(); ++i) index_of[model.tensors[i].name] = i;
  for (const TensorAlias& alias : model.aliases) {
    auto target = index_of.find(alias.target);
    if (target == index_of.end()) continue;
    TensorInfo copy = model.tensors[target->second];
    copy.name = alias.name;
    plan.tensors.push_back(std::move(copy));
  }
  const v1::BisectGranularity granularity = Granularity(spec);
  plan.units = BisectUnits(plan.tensors, DetectQuantizedLayouts(plan.tensors), granularity);
  const size_t chunks = ChunkCount(spec);
  if (chunks > plan.units.size()) {
    std::string hint;
    if (granularity == v1::BISECT_GRANULARITY_BLOCK) {
      hint = absl::StrCat(
          "; granularity 'module' gives ",
          BisectUnits(plan.tensors, DetectQuantizedLayouts(plan.tensors), v1::BISECT_GRANULARITY_MODULE).size(),
          " units");
    } else if (granularity == v1::BISECT_GRANULARITY_MODULE) {
      hint = absl::StrCat(
          "; granularity 'tensor' gives ",
          BisectUnits(plan.tensors, DetectQuantizedLayouts(plan.tensors), v1::BISECT_GRANULARITY_TENSOR).size(),
          " units");
    }
    return MakeError(
        absl::StatusCode::kInvalidArgument, "BISECT_TOO_MANY_CHUNKS",
        absl::StrCat("'bisect.chunks' is ", chunks, " but '", model.uri, "' has only ", plan.units.size(), " ",
                     GranularityName(granularity), " unit(s) to cut between (each chunk needs at least one)", hint),
        {{"field", "bisect.chunks"}});
  }
  std::vector<uint64_t> sizes;
  for (const BisectUnit& u : plan.units) sizes.push_back(u.size_bytes), plan.total_bytes += u.size_bytes;
  const std::vector<size_t> ends = PartitionMinMax(sizes, chunks);
  auto [stem, ext] = StemAndExtension(model);
  plan.stem = stem;
  size_t begin = 0;
  for (size_t k = 0; k < ends.size(); ++k) {
    PlannedChunk chunk;
    chunk.name = absl::StrCat(stem, "-chunk", k + 1, "-of-", ends.size(), ext);
    for (size_t u = begin; u < ends[k]; ++u) {
      chunk.units.push_back(u);
      chunk.size_bytes += plan.units[u].size_bytes;
      for (size_t t : plan.units[u].tensors) chunk.tensors.push_back(plan.tensors[t]);
    }
    plan.chunks.push_back(std::move(chunk));
    begin = ends[k];
  }
  return plan;
}

uint64_t EstimatePeakMemory(const ModelView& model) {
  uint64_t header_bytes = 0;
  for (const ModelFile& file : model.files) header_bytes += file.header.header_bytes;
  uint64_t largest_view = 0;  // a strided torch view is gathered in one read
  for (const TensorInfo& t : model.tensors) {
    if (!t.strides.empty()) largest_view = std::max(largest_view, t.size_bytes);
  }
  return kBisectBaseMemoryBytes + 8 * header_bytes + largest_view;
}

ordered_json ChunkIndexJson(const v1::BisectSpec& spec, const ModelView& model, const BisectPlan& plan,
                            const std::vector<v1::Artifact>& artifacts, double imbalance) {
  ordered_json index;
  index["format"] = model.format;
  index["source"] = model.uri;
  index["granularity"] = std::string(GranularityName(Granularity(spec)));
  index["total_size"] = plan.total_bytes;
  index["imbalance_ratio"] = imbalance;
  ordered_json chunks = ordered_json::array();
  for (size_t k = 0; k < plan.chunks.size(); ++k) {
    const PlannedChunk& chunk = plan.chunks[k];
    ordered_json units = ordered_json::array();
    ordered_json blocks = ordered_json::array();
    std::string last_block;
    for (size_t u : chunk.units) {
      const BisectUnit& unit = plan.units[u];
      units.push_back(unit.name);
      if (!unit.block.empty() && unit.block != last_block) blocks.push_back(unit.block), last_block = unit.block;
    }
    ordered_json tensors = ordered_json::array();
    for (const TensorInfo& t : chunk.tensors) tensors.push_back(t.name);
    chunks.push_back({{"index", k + 1},
                      {"file", chunk.name},
                      {"size_bytes", chunk.size_bytes},
                      {"file_bytes", artifacts[k].size_bytes()},
                      {"sha256", artifacts[k].sha256()},
                      {"units", std::move(units)},
                      {"blocks", std::move(blocks)},
                      {"tensors", std::move(tensors)}});
  }
  index["chunks"] = std::move(chunks);
  return index;
}

}  // namespace

struct BisectCheckpointPlan {
  ModelView model;
  BisectPlan plan;
};

absl::StatusOr<BisectOptions> BisectJob::Parse(const v1::JobSpec& job_spec) {
  const v1::BisectSpec& spec = job_spec.bisect();
  if (spec.input().empty()) return FieldError("MISSING_FIELD", "bisect.input", "'bisect.input' is required");
  if (spec.output().empty()) return FieldError("MISSING_FIELD", "bisect.output", "'bisect.output' is required");
  if (spec.chunks() == 1 || spec.chunks() > kMaxBisectChunks) {
    return FieldError("INVALID_CHUNKS", "bisect.chunks",
                      absl::StrCat("'bisect.chunks' is ", spec.chunks(), "; it must be between 2 and ",
                                   kMaxBisectChunks, " (0 means ", kDefaultBisectChunks, ")"));
  }
  if (!v1::BisectGranularity_IsValid(spec.granularity())) {
    return FieldError("INVALID_ENUM", "bisect.granularity", "unknown bisect granularity (block, module or tensor)");
  }
  const bool coreml = IsCoreMlInput(spec.input());
  if (spec.pipeline() && !coreml) {
    return FieldError("INVALID_ARGUMENT", "bisect.pipeline",
                      "'bisect.pipeline' merges Core ML chunks into one pipeline package; the input is not an "
                      ".mlpackage");
  }
  return BisectOptions{spec, spec.chunks() == 0 ? kDefaultBisectChunks : spec.chunks(), IsOnnxInput(spec.input()),
                       coreml};
}

absl::StatusOr<BisectJobPlan> BisectJob::MakePlan(const BisectOptions& options, const PlanEnv& env) {
  const v1::BisectSpec& spec = options.spec;
  BisectJobPlan job_plan;
  if (options.coreml) {
    absl::StatusOr<std::shared_ptr<CoreMlBisectJobPlan>> coreml =
        MakeCoreMlBisectPlan(spec, options.chunks, env, &job_plan.estimated_peak_bytes);
    if (!coreml.ok()) return coreml.status();
    job_plan.coreml = *std::move(coreml);
    return job_plan;
  }
  if (options.onnx) {
    absl::StatusOr<std::shared_ptr<OnnxBisectJobPlan>> onnx =
        MakeOnnxBisectPlan(spec, options.chunks, env, &job_plan.estimated_peak_bytes);
    if (!onnx.ok()) return onnx.status();
    job_plan.onnx = *std::move(onnx);
    return job_plan;
  }
  absl::StatusOr<ModelView> model = OpenInput(spec, env.router);
  if (!model.ok()) return model.status();
  absl::StatusOr<BisectPlan> plan = PlanBisect(spec, *model);
  if (!plan.ok()) return plan.status();
  if (absl::Status s = Publication::CheckApartFromInput(*model, env.router, spec.output(), "bisect.output"); !s.ok()) {
    return s;
  }
  const bool replace = spec.overwrite() || env.attempt > 1;
  if (absl::Status s = Publication::CheckDirectoryVacant(env.router, spec.output(), replace, "bisect.output");
      !s.ok()) {
    return s;
  }
  job_plan.estimated_peak_bytes = EstimatePeakMemory(*model);
  job_plan.checkpoint =
      std::make_shared<BisectCheckpointPlan>(BisectCheckpointPlan{*std::move(model), *std::move(plan)});
  return job_plan;
}

absl::StatusOr<v1::JobResult> BisectJob::Produce(BisectJobPlan& job_plan, const JobRun& run, JobContext& context) {
  if (job_plan.onnx != nullptr) return ProduceOnnxBisect(*job_plan.onnx, run, context);
  if (job_plan.coreml != nullptr) return ProduceCoreMlBisect(*job_plan.coreml, run, context);
  const auto start = std::chrono::steady_clock::now();
  const v1::BisectSpec& spec = run.spec.bisect();
  const ModelView* model = &job_plan.checkpoint->model;
  const BisectPlan* plan = &job_plan.checkpoint->plan;

  ProgressTracker tracker(context, plan->total_bytes, plan->tensors.size());
  tracker.SetPhase("plan");
  absl::StatusOr<Publication> output =
      Publication::ForDirectory(*run.router, spec.output(), spec.overwrite(), run.attempt, "bisect.output");
  if (!output.ok()) return output.status();
  std::vector<uint64_t> chunk_sizes;
  for (const PlannedChunk& c : plan->chunks) chunk_sizes.push_back(c.size_bytes);
  const double imbalance = ImbalanceRatio(chunk_sizes);
  context.Log(absl::StrFormat("splitting %d tensors (%d bytes) of '%s' (%s) into %d chunks between %d %s units at '%s'",
                              plan->tensors.size(), plan->total_bytes, model->uri, model->format, plan->chunks.size(),
                              plan->units.size(), GranularityName(Granularity(spec)), output->uri()));
  for (const PlannedChunk& c : plan->chunks) {
    context.Log(absl::StrFormat("%s: %d bytes, units '%s' .. '%s'", c.name, c.size_bytes,
                                plan->units[c.units.front()].name, plan->units[c.units.back()].name));
  }

  if (!model->skipped_entries.empty()) {
    context.Warn("BISECT_ENTRIES_DROPPED",
                 absl::StrCat("the state dict's non-tensor entries are not carried into the chunks: ",
                              absl::StrJoin(model->skipped_entries, ", ")),
                 "");
  }

  RateLimiter pace(run.io_bytes_per_second);
  for (const PlannedChunk& chunk : plan->chunks) {
    tracker.SetPhase("execute");
    const std::string torch_prefix = chunk.name.substr(0, chunk.name.rfind('.'));
    absl::StatusOr<v1::Artifact> artifact = output->Write(
        output->UriOf(chunk.name), "chunk",
        [&](PipelinedWriter& out) {
          return WriteChunkFile(*model, chunk.tensors, torch_prefix, out, ChunkIo{tracker, pace, context});
        },
        tracker, context);
    if (!artifact.ok()) return artifact.status();
  }
  // The index lists every chunk's SHA-256, which a store that verifies after commit has only then.
  if (absl::Status s = output->Commit(tracker, context); !s.ok()) return s;
  const std::vector<v1::Artifact> artifacts = output->artifacts();
  const std::string index_name = plan->stem + ".chunks.json";
  const std::string index_text = ChunkIndexJson(spec, *model, *plan, artifacts, imbalance).dump(2) + "\n";
  absl::StatusOr<v1::Artifact> index_artifact = output->WriteSmall(output->UriOf(index_name), index_text, "index");
  if (!index_artifact.ok()) return index_artifact.status();

  v1::JobResult result;
  v1::JobFigures* figures = result.mutable_figures();
  std::vector<uint64_t> file_bytes;
  for (size_t k = 0; k < plan->chunks.size(); ++k) file_bytes.push_back(artifacts[k].size_bytes());
  *figures->mutable_bisect() =
      MakeBisectFigures(chunk_sizes, file_bytes, std::string(GranularityName(Granularity(spec))), plan->units.size());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  figures->set_duration_seconds(seconds);
  figures->set_bytes_read(plan->total_bytes);
  figures->set_tensors(plan->tensors.size());
  figures->set_throughput_bytes_per_second(seconds > 0 ? plan->total_bytes / seconds : 0);
  tracker.Flush();
  figures->set_peak_resident_bytes(tracker.peak_resident_bytes());

  ordered_json manifest = ManifestHeader(run, "bisect", *model);
  manifest["figures"] = MessageJson(*figures);
  if (absl::Status s = output->Publish(std::move(manifest), result, tracker, context); !s.ok()) return s;
  return result;
}

}  // namespace modelsmith
