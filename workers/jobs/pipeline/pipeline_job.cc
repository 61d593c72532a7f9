#include "workers/jobs/pipeline/pipeline_job.h"

#include <algorithm>
#include <chrono>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "workers/common/error.h"
#include "workers/formats/diffusers_pipeline.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/quantize/layout_quantize_plan.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

constexpr char kStagingPrefix[] = ".modelsmith-pipeline-";
constexpr char kManifestName[] = "modelsmith.manifest.json";

// The spec's input (lora_merge: base), output and overwrite fields.
std::string* InputField(v1::JobSpec& spec) {
  switch (spec.kind_case()) {
    case v1::JobSpec::kConvert: return spec.mutable_convert()->mutable_input();
    case v1::JobSpec::kQuantize: return spec.mutable_quantize()->mutable_input();
    case v1::JobSpec::kShard: return spec.mutable_shard()->mutable_input();
    case v1::JobSpec::kBisect: return spec.mutable_bisect()->mutable_input();
    case v1::JobSpec::kLoraMerge: return spec.mutable_lora_merge()->mutable_base();
    case v1::JobSpec::KIND_NOT_SET: break;
  }
  return nullptr;
}

std::string* OutputField(v1::JobSpec& spec) {
  switch (spec.kind_case()) {
    case v1::JobSpec::kConvert: return spec.mutable_convert()->mutable_output();
    case v1::JobSpec::kQuantize: return spec.mutable_quantize()->mutable_output();
    case v1::JobSpec::kShard: return spec.mutable_shard()->mutable_output();
    case v1::JobSpec::kBisect: return spec.mutable_bisect()->mutable_output();
    case v1::JobSpec::kLoraMerge: return spec.mutable_lora_merge()->mutable_output();
    case v1::JobSpec::KIND_NOT_SET: break;
  }
  return nullptr;
}

bool Overwrite(const v1::JobSpec& spec) {
  switch (spec.kind_case()) {
    case v1::JobSpec::kConvert: return spec.convert().overwrite();
    case v1::JobSpec::kQuantize: return spec.quantize().overwrite();
    case v1::JobSpec::kShard: return spec.shard().overwrite();
    case v1::JobSpec::kBisect: return spec.bisect().overwrite();
    case v1::JobSpec::kLoraMerge: return spec.lora_merge().overwrite();
    case v1::JobSpec::KIND_NOT_SET: break;
  }
  return false;
}

absl::string_view KindField(const v1::JobSpec& spec) {
  switch (spec.kind_case()) {
    case v1::JobSpec::kConvert: return "convert";
    case v1::JobSpec::kQuantize: return "quantize";
    case v1::JobSpec::kShard: return "shard";
    case v1::JobSpec::kBisect: return "bisect";
    case v1::JobSpec::kLoraMerge: return "lora_merge";
    case v1::JobSpec::KIND_NOT_SET: break;
  }
  return "";
}

// Overrides merged into the kind's spec. A value is taken as a JSON string first (max_shard_size
// "4" stays a string), then as a JSON literal (block_size 128, double_quant true, keep [..]).
absl::Status ApplyOverrides(const std::string& component, const v1::ComponentOptions& options, v1::JobSpec& spec) {
  static const std::set<std::string> kFixed = {"input", "output", "base", "overwrite", "component"};
  std::vector<std::pair<std::string, std::string>> sorted(options.options().begin(), options.options().end());
  std::sort(sorted.begin(), sorted.end());
  for (const auto& [key, value] : sorted) {
    const std::string field = absl::StrCat("component_options.", component, ".", key);
    if (kFixed.count(key)) {
      return FieldError(
          "COMPONENT_OPTION_INVALID", field,
          absl::StrCat("'", key, "' is set by the pipeline job for each component; it cannot be overridden"));
    }
    v1::JobSpec patch;
    std::string error;
    for (const bool literal : {false, true}) {
      nlohmann::json body = {{std::string(KindField(spec)), {{key, value}}}};
      if (literal) {
        nlohmann::json parsed = nlohmann::json::parse(value, nullptr, false);
        if (parsed.is_discarded()) break;
        body[std::string(KindField(spec))][key] = parsed;
      }
      const auto parsed = google::protobuf::util::JsonStringToMessage(body.dump(), &patch);
      if (parsed.ok()) {
        error.clear();
        break;
      }
      error = std::string(parsed.message().data(), parsed.message().size());
    }
    if (!error.empty()) {
      return FieldError("COMPONENT_OPTION_INVALID", field,
                        absl::StrCat("'", key, "=", value, "' is not a ", KindField(spec), " option: ", error));
    }
    spec.MergeFrom(patch);
  }
  return absl::OkStatus();
}

// A component's own spec: the pipeline's, on the component folder, with its overrides.
absl::StatusOr<v1::JobSpec> ComponentSpec(const v1::JobSpec& spec, const PipelineComponent& component,
                                          const std::string& component_dir, const std::string& output) {
  absl::StatusOr<const WeightSet*> weights = ChooseWeights(component, spec.input_variant());
  if (!weights.ok()) return WithReason(weights.status(), ReasonOf(weights.status()), {{"field", "input_variant"}});
  const std::string& stem = (*weights)->stem;
  v1::JobSpec out = spec;
  out.clear_components();
  out.clear_component_options();
  out.clear_input_variant();
  *InputField(out) = JoinUri(component_dir, (*weights)->entry);
  *OutputField(out) = output;
  switch (out.kind_case()) {
    case v1::JobSpec::kConvert:
      out.mutable_convert()->set_overwrite(true);
      if (out.convert().stem().empty()) out.mutable_convert()->set_stem(stem);
      break;
    case v1::JobSpec::kShard:
      out.mutable_shard()->set_overwrite(true);
      if (out.shard().stem().empty()) out.mutable_shard()->set_stem(stem);
      break;
    case v1::JobSpec::kQuantize:
      out.mutable_quantize()->set_overwrite(true);
      if (out.quantize().stem().empty()) out.mutable_quantize()->set_stem(stem);
      break;
    case v1::JobSpec::kBisect: out.mutable_bisect()->set_overwrite(true); break;
    case v1::JobSpec::kLoraMerge:
      out.mutable_lora_merge()->set_overwrite(true);
      out.mutable_lora_merge()->set_component(component.name);
      break;
    case v1::JobSpec::KIND_NOT_SET: break;
  }
  if (auto it = spec.component_options().find(component.name); it != spec.component_options().end()) {
    if (absl::Status s = ApplyOverrides(component.name, it->second, out); !s.ok()) return s;
  }
  return out;
}

struct Selection {
  DiffusersPipeline pipeline;
  std::vector<const PipelineComponent*> selected;
};

// A GGUF output is one file, not a pipeline's component folder.
absl::Status CheckDirectoryOutput(const v1::JobSpec& spec) {
  const bool gguf =
      (spec.kind_case() == v1::JobSpec::kConvert && spec.convert().target_format() == v1::TARGET_FORMAT_GGUF) ||
      (spec.kind_case() == v1::JobSpec::kQuantize && !IsLayoutScheme(spec.quantize().scheme()));
  if (!gguf) return absl::OkStatus();
  return MakeError(
      absl::StatusCode::kUnimplemented, "PIPELINE_GGUF_UNSUPPORTED",
      "a diffusers pipeline is written as a pipeline directory; GGUF output is one file per model, so "
      "convert or quantize a component's folder (<pipeline>/<component>) to GGUF on its own",
      {{"field", spec.kind_case() == v1::JobSpec::kConvert ? "convert.target_format" : "quantize.scheme"}});
}

absl::StatusOr<Selection> Select(const v1::JobSpec& spec, ObjectStore& store, const std::string& uri) {
  if (absl::Status s = CheckDirectoryOutput(spec); !s.ok()) return s;
  absl::StatusOr<DiffusersPipeline> pipeline = ReadDiffusersPipeline(store, uri);
  if (!pipeline.ok()) return pipeline.status();
  Selection selection{*std::move(pipeline), {}};
  std::vector<std::string> known;
  for (const PipelineComponent& c : selection.pipeline.components) known.push_back(c.name);
  auto find = [&](const std::string& name) -> const PipelineComponent* {
    for (const PipelineComponent& c : selection.pipeline.components) {
      if (c.name == name) return &c;
    }
    return nullptr;
  };
  auto unknown = [&](const std::string& field, const std::string& name) {
    return FieldError("COMPONENT_UNKNOWN", field,
                      absl::StrCat("the pipeline has no component '", name, "'; it has ", absl::StrJoin(known, ", ")));
  };
  if (spec.components().empty()) {
    for (const PipelineComponent& c : selection.pipeline.components) {
      if (c.has_weights()) selection.selected.push_back(&c);
    }
  } else {
    for (const std::string& name : spec.components()) {
      const PipelineComponent* c = find(name);
      if (c == nullptr) return unknown("components", name);
      if (!c->has_weights()) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "COMPONENT_HAS_NO_WEIGHTS",
                         absl::StrCat("component '", name, "' (", c->type, ") holds no weight files to process"),
                         {{"field", "components"}});
      }
      if (std::find(selection.selected.begin(), selection.selected.end(), c) == selection.selected.end())
        selection.selected.push_back(c);
    }
  }
  for (const auto& [name, options] : spec.component_options()) {
    const PipelineComponent* c = find(name);
    if (c == nullptr) return unknown(absl::StrCat("component_options.", name), name);
    if (std::find(selection.selected.begin(), selection.selected.end(), c) == selection.selected.end()) {
      return FieldError("COMPONENT_OPTION_INVALID", absl::StrCat("component_options.", name),
                        absl::StrCat("component '", name, "' has options but is not among the components processed"));
    }
  }
  if (selection.selected.empty()) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "COMPONENT_HAS_NO_WEIGHTS",
                     "no component of the pipeline holds weights", {{"field", "components"}});
  }
  return selection;
}

// Where a component stands in the whole pipeline's progress: its place, and its weight bytes
// after those of the components before it.
struct ComponentShare {
  uint32_t index = 0, count = 0;
  uint64_t bytes_before = 0, bytes = 0, bytes_total = 0;
};

// Progress, warnings and logs of one component's job, marked with the component and its place;
// its bytes become the pipeline's (the component's share scaled by how far its job is).
class ComponentContext : public JobContext {
 public:
  ComponentContext(JobContext& parent, std::string component, ComponentShare share)
      : parent_(parent), component_(std::move(component)), share_(share) {}
  bool stop_requested() const override { return parent_.stop_requested(); }
  void ReportProgress(const v1::Progress& progress) override {
    v1::Progress marked = progress;
    marked.set_component(component_);
    marked.set_components_done(share_.index);
    marked.set_components_total(share_.count);
    const double fraction =
        progress.bytes_total() > 0 ? std::min(1.0, double(progress.bytes_done()) / double(progress.bytes_total())) : 0;
    marked.set_bytes_done(share_.bytes_before + static_cast<uint64_t>(fraction * double(share_.bytes)));
    marked.set_bytes_total(share_.bytes_total);
    marked.set_eta_seconds(-1);  // the component's own ETA is not the pipeline's
    parent_.ReportProgress(marked);
  }
  void Warn(absl::string_view code, absl::string_view message, absl::string_view tensor) override {
    parent_.Warn(code, absl::StrCat(component_, ": ", message), tensor);
  }
  void Log(absl::string_view message) override { parent_.Log(absl::StrCat(component_, ": ", message)); }
  absl::Status ConfirmStillOwner() const override { return parent_.ConfirmStillOwner(); }

 private:
  JobContext& parent_;
  std::string component_;
  ComponentShare share_;
};

// Deletes every object under `prefix` (best effort: the staging folder of this job).
void RemoveAll(ObjectStore& store, const std::string& prefix) {
  absl::StatusOr<std::vector<ObjectEntry>> entries = store.List(prefix);
  if (!entries.ok()) return;
  for (const ObjectEntry& e : *entries) (void)store.Delete(e.uri);
}

// A weight file or a weight index of a component: replaced by the component job's output.
bool IsWeightOrIndex(absl::string_view name) {
  if (name.find('/') != absl::string_view::npos) return false;
  for (const char* ext : {".safetensors", ".bin", ".pt", ".pth", ".ckpt"}) {
    if (absl::EndsWith(name, ext)) return true;
  }
  return absl::EndsWith(name, ".json") &&
         (absl::StrContains(name, ".safetensors.index") || absl::StrContains(name, ".bin.index"));
}

// Copies `source` to `uri` through the publication, byte for byte.
absl::StatusOr<v1::Artifact> CopyObject(Publication& out, ObjectStore& store, const std::string& source,
                                        const std::string& uri, absl::string_view role, ProgressTracker& tracker,
                                        RateLimiter& pace, const JobContext& context) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> in = store.OpenForRead(source);
  if (!in.ok()) return in.status();
  const uint64_t size = (*in)->size_bytes();
  return out.Write(
      uri, role,
      [&](PipelinedWriter& writer) -> absl::StatusOr<WrittenObject> {
        if (absl::Status s = CopyByteRange(**in, 0, size, writer, tracker, pace, context); !s.ok()) return s;
        return WrittenObject{size, [](const RandomAccessObject&) { return absl::OkStatus(); }};
      },
      tracker, context);
}

// The output pipeline may neither lie inside the input nor hold it.
absl::Status CheckApart(const std::string& input, const std::string& output, absl::string_view field) {
  if (absl::StartsWith(output + "/", input + "/") || absl::StartsWith(input + "/", output + "/")) {
    return FieldError("OUTPUT_OVERLAPS_INPUT", field,
                      "the output pipeline directory must lie outside the input pipeline and not hold it");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<std::string>> PipelineInput(const v1::JobSpec& spec, const StorageRouter& router) {
  v1::JobSpec copy = spec;
  std::string* input = InputField(copy);
  if (input == nullptr || input->empty()) return std::optional<std::string>();
  absl::StatusOr<Location> location = router.Resolve(*input);
  if (!location.ok()) return std::optional<std::string>();  // the kind reports its own input error
  absl::StatusOr<bool> is = IsDiffusersPipeline(*location->store, location->uri);
  if (!is.ok()) return is.status();
  return *is ? std::optional<std::string>(location->uri) : std::nullopt;
}

absl::Status ValidatePipelineFields(const v1::JobSpec& spec) {
  for (const std::string& name : spec.components()) {
    if (name.empty() || name.find('/') != std::string::npos || name.front() == '.')
      return FieldError("COMPONENT_UNKNOWN", "components", absl::StrCat("'", name, "' is not a component name"));
  }
  for (const auto& [name, options] : spec.component_options()) {
    if (options.options().empty()) {
      return FieldError("COMPONENT_OPTION_INVALID", absl::StrCat("component_options.", name),
                        "names a component but no option");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> PreflightPipeline(const v1::JobSpec& spec, const std::string& pipeline_uri,
                                           const StorageRouter& router, const PipelineKind& kind) {
  absl::StatusOr<Location> in = router.Resolve(pipeline_uri);
  if (!in.ok()) return in.status();
  absl::StatusOr<Selection> selection = Select(spec, *in->store, in->uri);
  if (!selection.ok()) return selection.status();
  v1::JobSpec copy = spec;
  absl::StatusOr<Location> out = router.Resolve(*OutputField(copy));
  if (!out.ok()) return WithReason(out.status(), ReasonOf(out.status()), {{"field", std::string(kind.output_field)}});
  if (absl::Status s = CheckApart(in->uri, out->uri, kind.output_field); !s.ok()) return s;
  if (absl::Status s = Publication::CheckDirectoryVacant(router, out->uri, Overwrite(spec), kind.output_field); !s.ok())
    return s;
  uint64_t peak = 0;
  for (const PipelineComponent* c : selection->selected) {
    absl::StatusOr<v1::JobSpec> component = ComponentSpec(
        spec, *c, JoinUri(in->uri, c->name), JoinUri(JoinUri(out->uri, ".modelsmith-pipeline-check"), c->name));
    if (!component.ok()) return component.status();
    absl::StatusOr<uint64_t> estimate = kind.preflight(*component);
    if (!estimate.ok()) return Annotate(estimate.status(), absl::StrCat("component '", c->name, "'"));
    peak = std::max(peak, *estimate);
  }
  return peak;
}

absl::StatusOr<v1::JobResult> RunPipeline(const JobRun& run, JobContext& context, const std::string& pipeline_uri,
                                          const PipelineKind& kind) {
  const auto started = std::chrono::steady_clock::now();
  absl::StatusOr<Location> in = run.router->Resolve(pipeline_uri);
  if (!in.ok()) return in.status();
  absl::StatusOr<Selection> selection = Select(run.spec, *in->store, in->uri);
  if (!selection.ok()) return selection.status();
  v1::JobSpec spec_copy = run.spec;
  if (absl::StatusOr<Location> target = run.router->Resolve(*OutputField(spec_copy)); target.ok()) {
    if (absl::Status s = CheckApart(in->uri, target->uri, kind.output_field); !s.ok()) return s;
  }
  absl::StatusOr<Publication> out = Publication::ForDirectory(*run.router, *OutputField(spec_copy), Overwrite(run.spec),
                                                              run.attempt, kind.output_field);
  if (!out.ok()) return out.status();
  ObjectStore& out_store = out->store();
  // Leftovers of an earlier attempt's staging, then this attempt's own folder.
  if (absl::StatusOr<std::vector<ObjectEntry>> old = out_store.List(out->uri()); old.ok()) {
    for (const ObjectEntry& e : *old) {
      if (absl::StartsWith(e.relative_name, kStagingPrefix)) (void)out_store.Delete(e.uri);
    }
  }
  std::string safe_id = run.job_id;
  for (char& c : safe_id) {
    if (c == '/' || c == '\\' || c == '.') c = '_';
  }
  const std::string staging = out->UriOf(absl::StrCat(kStagingPrefix, safe_id));
  // The staging folder goes in any case; the output's component folders too while unpublished
  // (the publication removes their files; the directories a local store made stay otherwise).
  struct Cleanup {
    ObjectStore& store;
    std::string staging;
    std::vector<std::string> folders;
    bool published = false;
    ~Cleanup() {
      RemoveAll(store, staging);
      store.RemoveEmptyDirectories(staging);
      if (published) return;
      for (const std::string& folder : folders) store.RemoveEmptyDirectories(folder);
    }
  } cleanup{out_store, staging, {}};
  for (const PipelineComponent& c : selection->pipeline.components) cleanup.folders.push_back(out->UriOf(c.name));

  const std::vector<const PipelineComponent*>& selected = selection->selected;
  v1::JobResult result;
  v1::JobFigures* figures = result.mutable_figures();
  std::map<std::string, v1::JobResult> component_results;
  // The bytes each component's job reads (its chosen weights), for the pipeline's progress.
  std::vector<uint64_t> component_bytes;
  uint64_t weight_bytes = 0, bytes_before = 0;
  for (const PipelineComponent* c : selected) {
    absl::StatusOr<const WeightSet*> weights = ChooseWeights(*c, run.spec.input_variant());
    component_bytes.push_back(weights.ok() ? (*weights)->bytes : 0);
    weight_bytes += component_bytes.back();
  }
  for (size_t i = 0; i < selected.size(); ++i) {
    const PipelineComponent& c = *selected[i];
    if (absl::Status stop = StopStatus(context); !stop.ok()) return stop;
    absl::StatusOr<v1::JobSpec> spec = ComponentSpec(run.spec, c, JoinUri(in->uri, c.name), JoinUri(staging, c.name));
    if (!spec.ok()) return spec.status();
    JobRun component_run = run;
    component_run.spec = *std::move(spec);
    component_run.job_id = absl::StrCat(run.job_id, "-", c.name);
    ComponentContext component_context(context, c.name,
                                       ComponentShare{static_cast<uint32_t>(i), static_cast<uint32_t>(selected.size()),
                                                      bytes_before, component_bytes[i], weight_bytes});
    bytes_before += component_bytes[i];
    context.Log(absl::StrCat("component ", i + 1, "/", selected.size(), ": ", c.name, " (", c.type, ")"));
    absl::StatusOr<v1::JobResult> done = kind.run(component_run, component_context);
    if (!done.ok()) {
      return WithReason(Annotate(done.status(), absl::StrCat("component '", c.name, "'")), ReasonOf(done.status()),
                        {{"component", c.name}});
    }
    v1::ComponentFigures* entry = figures->add_components();
    entry->set_name(c.name);
    *entry->mutable_figures() = done->figures();
    figures->set_bytes_read(figures->bytes_read() + done->figures().bytes_read());
    figures->set_tensors(figures->tensors() + done->figures().tensors());
    figures->set_peak_resident_bytes(std::max(figures->peak_resident_bytes(), done->figures().peak_resident_bytes()));
    component_results[c.name] = *std::move(done);
  }

  // The output pipeline: processed components from staging, everything else from the input.
  std::set<std::string> processed;
  for (const PipelineComponent* c : selected) processed.insert(c->name);
  struct Copy {
    std::string source, name, role;
    uint64_t size;
    std::string sha256;  // a component job's artifact, verified by that job: moved where the store can
  };
  std::vector<Copy> copies;
  std::set<std::string> written;
  for (const PipelineComponent* c : selected) {
    for (const v1::Artifact& a : component_results[c->name].artifacts()) {
      const std::string name(a.uri().substr(JoinUri(staging, c->name).size() + 1));
      if (name == kManifestName) continue;
      copies.push_back({a.uri(), absl::StrCat(c->name, "/", name), a.role(), a.size_bytes(), a.sha256()});
      written.insert(copies.back().name);
    }
  }
  for (const ObjectEntry& file : selection->pipeline.files) {
    if (in->store->IsStagingName(file.relative_name) || written.count(file.relative_name)) continue;
    const size_t slash = file.relative_name.find('/');
    if (slash != std::string::npos && processed.count(file.relative_name.substr(0, slash)) &&
        IsWeightOrIndex(absl::string_view(file.relative_name).substr(slash + 1)))
      continue;  // replaced by the component's output
    copies.push_back({file.uri, file.relative_name, "copy", file.size_bytes, ""});
  }
  uint64_t copy_bytes = 0;
  for (const Copy& c : copies) copy_bytes += c.size;
  ProgressTracker tracker(context, copy_bytes, 0);
  tracker.SetPhase("publish");
  RateLimiter pace(run.io_bytes_per_second);
  for (const Copy& c : copies) {
    const bool staged = absl::StartsWith(c.source, staging);
    if (staged && !c.sha256.empty()) {
      // The component job wrote and verified it (size and SHA-256); a local store moves it.
      absl::StatusOr<std::unique_ptr<ObjectWriter>> moved = out_store.AdoptForWrite(c.source, out->UriOf(c.name));
      if (moved.ok() && (*moved)->bytes_written() == c.size) {
        v1::Artifact artifact;
        artifact.set_uri(out->UriOf(c.name));
        artifact.set_size_bytes(c.size);
        artifact.set_sha256(c.sha256);
        artifact.set_role(c.role);
        const uint64_t size = c.size;
        out->Hold(*std::move(moved), std::move(artifact), [size](const RandomAccessObject& o) {
          return o.size_bytes() == size ? absl::OkStatus() : absl::DataLossError("moved object changed size");
        });
        tracker.AddBytes(c.size);
        continue;
      }
      if (moved.ok()) return absl::DataLossError(absl::StrCat("staged '", c.name, "' changed size"));
      if (!absl::IsUnimplemented(moved.status())) return Annotate(moved.status(), absl::StrCat("'", c.name, "'"));
    }
    ObjectStore& source_store = staged ? out_store : *in->store;
    absl::StatusOr<v1::Artifact> copied =
        CopyObject(*out, source_store, c.source, out->UriOf(c.name), c.role, tracker, pace, context);
    if (!copied.ok()) return Annotate(copied.status(), absl::StrCat("'", c.name, "'"));
  }
  ordered_json components = ordered_json::array();
  for (const PipelineComponent& c : selection->pipeline.components) {
    ordered_json entry = {
        {"name", c.name}, {"library", c.library}, {"class", c.type}, {"processed", processed.count(c.name) > 0}};
    if (auto it = component_results.find(c.name); it != component_results.end()) {
      std::string figures_json;
      (void)google::protobuf::util::MessageToJsonString(it->second.figures(), &figures_json);
      entry["figures"] = ordered_json::parse(figures_json, nullptr, false);
    }
    components.push_back(std::move(entry));
  }
  ordered_json manifest = {
      {"kind", std::string(kind.name)},
      {"job_id", run.job_id},
      {"input", in->uri},
      {"pipeline", {{"class", selection->pipeline.model_index.value("_class_name", "")}, {"components", components}}}};
  if (absl::Status s = out->Publish(std::move(manifest), result, tracker, context); !s.ok()) return s;
  cleanup.published = true;
  figures->set_duration_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  figures->set_peak_resident_bytes(std::max(figures->peak_resident_bytes(), tracker.peak_resident_bytes()));
  return result;
}

}  // namespace modelsmith
