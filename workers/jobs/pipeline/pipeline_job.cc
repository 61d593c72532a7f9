#include "workers/jobs/pipeline/pipeline_job.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "workers/common/error.h"
#include "workers/formats/diffusers_pipeline.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/pipeline/component_context.h"
#include "workers/jobs/pipeline/component_plan.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

constexpr char kStagingPrefix[] = ".modelsmith-pipeline-";
constexpr char kManifestName[] = "modelsmith.manifest.json";

// Deletes every object under `prefix` (best effort: the staging folder of this job).
void RemoveAll(ObjectStore& store, const std::string& prefix) {
  absl::StatusOr<std::vector<ObjectEntry>> entries = store.List(prefix);
  if (!entries.ok()) return;
  for (const ObjectEntry& e : *entries) (void)store.Delete(e.uri);
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

// A file of the output pipeline and where its bytes come from.
struct OutputFile {
  std::string source, name, role;
  uint64_t size = 0;
  std::string sha256;  // set for a component job's artifact, which that job verified: it may be moved
};

// The output pipeline's files: each processed component's artifacts (its own manifest aside), then
// every input file but the processed components' weights and indexes and the names their jobs wrote.
std::vector<OutputFile> OutputFiles(const Selection& selection, const std::map<std::string, v1::JobResult>& results,
                                    const std::string& staging, const ObjectStore& in_store) {
  std::set<std::string> processed, written;
  std::vector<OutputFile> files;
  for (const PipelineComponent* c : selection.selected) {
    processed.insert(c->name);
    for (const v1::Artifact& a : results.at(c->name).artifacts()) {
      const std::string name(a.uri().substr(JoinUri(staging, c->name).size() + 1));
      if (name == kManifestName) continue;
      files.push_back({a.uri(), absl::StrCat(c->name, "/", name), a.role(), a.size_bytes(), a.sha256()});
      written.insert(files.back().name);
    }
  }
  for (const ObjectEntry& file : selection.pipeline.files) {
    if (in_store.IsStagingName(file.relative_name) || written.count(file.relative_name)) continue;
    const size_t slash = file.relative_name.find('/');
    if (slash != std::string::npos && processed.count(file.relative_name.substr(0, slash)) &&
        IsWeightFileName(absl::string_view(file.relative_name).substr(slash + 1)))
      continue;  // replaced by the component's output
    files.push_back({file.uri, file.relative_name, "copy", file.size_bytes, ""});
  }
  return files;
}

// Puts `file` (its bytes in `source_store`) into the output: moved in place where the store can
// (a component job's verified artifact), else copied and verified.
absl::Status PlaceFile(const OutputFile& file, ObjectStore& source_store, Publication& out, ProgressTracker& tracker,
                       RateLimiter& pace, const JobContext& context) {
  const std::string target = out.UriOf(file.name);
  if (!file.sha256.empty() && &source_store == &out.store()) {
    absl::StatusOr<std::unique_ptr<ObjectWriter>> moved = out.store().AdoptForWrite(file.source, target);
    if (moved.ok()) {
      if ((*moved)->bytes_written() != file.size)
        return absl::DataLossError(absl::StrCat("staged '", file.name, "' changed size"));
      v1::Artifact artifact;
      artifact.set_uri(target);
      artifact.set_size_bytes(file.size);
      artifact.set_sha256(file.sha256);
      artifact.set_role(file.role);
      const uint64_t size = file.size;
      out.Hold(*std::move(moved), std::move(artifact), [size](const RandomAccessObject& o) {
        return o.size_bytes() == size ? absl::OkStatus() : absl::DataLossError("moved object changed size");
      });
      tracker.AddBytes(file.size);
      return absl::OkStatus();
    }
    if (!absl::IsUnimplemented(moved.status())) return Annotate(moved.status(), absl::StrCat("'", file.name, "'"));
  }
  absl::StatusOr<v1::Artifact> copied =
      CopyObject(out, source_store, file.source, target, file.role, tracker, pace, context);
  return copied.ok() ? absl::OkStatus() : Annotate(copied.status(), absl::StrCat("'", file.name, "'"));
}

// The manifest body: the kind, the input, and every component with its figures when processed.
ordered_json PipelineManifest(const JobRun& run, const PipelineKind& kind, const std::string& input,
                              const Selection& selection, const std::map<std::string, v1::JobResult>& results) {
  ordered_json components = ordered_json::array();
  for (const PipelineComponent& c : selection.pipeline.components) {
    auto it = results.find(c.name);
    ordered_json entry = {
        {"name", c.name}, {"library", c.library}, {"class", c.type}, {"processed", it != results.end()}};
    if (it != results.end()) {
      std::string figures_json;
      (void)google::protobuf::util::MessageToJsonString(it->second.figures(), &figures_json);
      entry["figures"] = ordered_json::parse(figures_json, nullptr, false);
    }
    components.push_back(std::move(entry));
  }
  return {
      {"kind", std::string(kind.name)},
      {"job_id", run.job_id},
      {"input", input},
      {"pipeline", {{"class", selection.pipeline.model_index.value("_class_name", "")}, {"components", components}}}};
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
  const std::string input = InputOf(spec);
  if (input.empty()) return std::optional<std::string>();
  absl::StatusOr<Location> location = router.Resolve(input);
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
  absl::StatusOr<Selection> selection = SelectComponents(spec, *in->store, in->uri);
  if (!selection.ok()) return selection.status();
  absl::StatusOr<Location> out = router.Resolve(OutputOf(spec));
  if (!out.ok()) return WithReason(out.status(), ReasonOf(out.status()), {{"field", std::string(kind.output_field)}});
  if (absl::Status s = CheckApart(in->uri, out->uri, kind.output_field); !s.ok()) return s;
  if (absl::Status s = Publication::CheckDirectoryVacant(router, out->uri, OverwriteOf(spec), kind.output_field);
      !s.ok())
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
  absl::StatusOr<Selection> selection = SelectComponents(run.spec, *in->store, in->uri);
  if (!selection.ok()) return selection.status();
  if (absl::StatusOr<Location> target = run.router->Resolve(OutputOf(run.spec)); target.ok()) {
    if (absl::Status s = CheckApart(in->uri, target->uri, kind.output_field); !s.ok()) return s;
  }
  absl::StatusOr<Publication> opened =
      Publication::ForDirectory(*run.router, OutputOf(run.spec), OverwriteOf(run.spec), run.attempt, kind.output_field);
  if (!opened.ok()) return opened.status();
  std::optional<Publication> out(*std::move(opened));
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
  // The staging folder goes in any case. Unpublished, the publication is dropped first (it aborts
  // what it staged), then the output's component folders a local store made and left empty.
  struct Cleanup {
    ObjectStore& store;
    std::optional<Publication>& publication;
    std::string staging;
    std::vector<std::string> folders;
    bool published = false;
    ~Cleanup() {
      if (!published) publication.reset();
      RemoveAll(store, staging);
      store.RemoveEmptyDirectories(staging);
      if (published) return;
      for (const std::string& folder : folders) store.RemoveEmptyDirectories(folder);
    }
  } cleanup{out_store, out, staging, {}};
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
  const std::vector<OutputFile> files = OutputFiles(*selection, component_results, staging, *in->store);
  uint64_t output_bytes = 0;
  for (const OutputFile& f : files) output_bytes += f.size;
  ProgressTracker tracker(context, output_bytes, 0);
  tracker.SetPhase("publish");
  RateLimiter pace(run.io_bytes_per_second);
  for (const OutputFile& f : files) {
    ObjectStore& source_store = absl::StartsWith(f.source, staging) ? out_store : *in->store;
    if (absl::Status s = PlaceFile(f, source_store, *out, tracker, pace, context); !s.ok()) return s;
  }
  ordered_json manifest = PipelineManifest(run, kind, in->uri, *selection, component_results);
  if (absl::Status s = out->Publish(std::move(manifest), result, tracker, context); !s.ok()) return s;
  cleanup.published = true;
  figures->set_duration_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  figures->set_peak_resident_bytes(std::max(figures->peak_resident_bytes(), tracker.peak_resident_bytes()));
  return result;
}

}  // namespace modelsmith
