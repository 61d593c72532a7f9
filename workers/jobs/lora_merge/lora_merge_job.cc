#include "workers/jobs/lora_merge/lora_merge_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"
#include "workers/jobs/lora_merge/lora_merge_files.h"
#include "workers/jobs/lora_merge/lora_merge_plan.h"
#include "workers/jobs/lora_merge/lora_merge_side_files.h"
#include "workers/jobs/lora_merge/lora_merge_tensor.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/core/publication.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

// The writer's queue, a chunk being made, per-thread scratch and bookkeeping; the adapters'
// matrices of one tensor come on top.
constexpr uint64_t kMergeJobBaseMemoryBytes = 96 << 20;
constexpr size_t kLargestUpdatesReported = 10;

// The output follows the base: a .gguf file for a GGUF base, a directory otherwise.
absl::Status CheckOutputShape(const LoraMergePlan& plan, const std::string& output) {
  const bool gguf_output = absl::EndsWith(output, ".gguf");
  if (plan.gguf() && !gguf_output) {
    return FieldError(
        "INVALID_OUTPUT", "lora_merge.output",
        absl::StrCat("base '", plan.base.uri, "' is GGUF, so the output must be a .gguf file, not '", output, "'"));
  }
  if (!plan.gguf() && (gguf_output || absl::EndsWith(output, ".safetensors") || absl::EndsWith(output, ".bin"))) {
    return FieldError("INVALID_OUTPUT", "lora_merge.output",
                      absl::StrCat("the output of a ", plan.base.is_torch() ? "torch" : "safetensors",
                                   " base is a directory that receives its files; '", output, "' names a file"));
  }
  return absl::OkStatus();
}

absl::Status CheckNoOverlap(const LoraMergePlan& plan, const std::string& output_uri) {
  for (const ModelFile& file : plan.base.files) {
    if (file.uri == output_uri || ParentUri(file.uri) == output_uri) {
      return FieldError(
          "OUTPUT_OVERLAPS_INPUT", "lora_merge.output",
          absl::StrCat("output '", output_uri, "' would overwrite base file '", file.uri, "'; write elsewhere"));
    }
  }
  return absl::OkStatus();
}

// Where each base file goes.
// The uri of each output file, in the base's file order: the base's names inside a directory
// output, else the named GGUF file or its split parts.
std::vector<std::string> OutputUris(const LoraMergePlan& plan, const std::string& output_uri, bool directory) {
  std::vector<std::string> uris;
  const size_t n = plan.base.files.size();
  for (size_t i = 0; i < n; ++i) {
    if (directory) {
      uris.push_back(JoinUri(output_uri, plan.base.files[i].name));
    } else if (n == 1) {
      uris.push_back(output_uri);
    } else {
      uris.push_back(GgufSplitUri(output_uri.substr(0, output_uri.size() - std::strlen(".gguf")), i + 1, n));
    }
  }
  return uris;
}

ordered_json FiniteOrNull(double v) { return std::isfinite(v) ? ordered_json(v) : ordered_json(nullptr); }

// The weight a merged tensor stands for: a quantized group's "<module>.weight", else the tensor.
const std::string& WeightName(const MergeTensor& t) { return t.reader != nullptr ? t.reader->name() : t.base->name; }

// One warning per quantized scheme merged into, stating the policy.
void WarnPolicies(const LoraMergePlan& plan, JobContext& context) {
  struct Scheme {
    size_t count = 0;
    std::string first, written;
  };
  std::map<std::string, Scheme> by_type;
  for (const auto& [index, t] : plan.merged) {
    if (!t.quantized()) continue;
    auto [it, created] = by_type.try_emplace(t.type, Scheme{0, WeightName(t), t.written_type()});
    ++it->second.count;
  }
  for (const auto& [type, scheme] : by_type) {
    if (scheme.written != type) {
      context.Warn("LORA_DEQUANTIZED",
                   absl::StrCat(scheme.count, " merged weight(s) of type ", type,
                                " are dequantized, merged in F32 and written as ", scheme.written,
                                " (policy dequantize): they grow, the rest of the model stays ", type,
                                "; the result's snr_db per tensor is the rounding to ", scheme.written),
                   scheme.first);
    } else {
      context.Warn("LORA_REQUANTIZED",
                   absl::StrCat(scheme.count, " merged weight(s) of type ", type,
                                " are dequantized, merged in F32 and quantized again as ", type,
                                " (policy requantize); the result's snr_db per tensor is the error that adds"),
                   scheme.first);
    }
  }
}

ordered_json AdaptersJson(const LoraMergePlan& plan) {
  ordered_json adapters = ordered_json::array();
  for (const auto& a : plan.adapters) {
    size_t skipped = 0;
    for (const SkippedKey& k : plan.skipped) skipped += k.adapter == a.get();
    adapters.push_back({{"uri", a->uri},
                        {"style", a->adapter.style},
                        {"config_source", a->adapter.config_source},
                        {"use_rslora", a->adapter.use_rslora},
                        {"strength", a->strength},
                        {"modules", a->adapter.modules.size()},
                        {"modules_matched", a->match.targets.size()},
                        {"keys_skipped", skipped}});
  }
  return adapters;
}

void FillFigures(const LoraMergePlan& plan, const std::vector<MergedRecord>& records, v1::LoraMergeFigures* f) {
  f->set_adapters(plan.adapters.size());
  f->set_modules_matched(plan.modules_matched);
  f->set_modules_skipped(plan.skipped.size());
  f->set_tensors_merged(records.size());
  uint32_t copied = 0;
  for (size_t i = 0; i < plan.base.tensors.size(); ++i) copied += !plan.merged.count(i) && !plan.group_member.count(i);
  f->set_tensors_copied(copied);
  double min_snr = std::numeric_limits<double>::infinity();
  uint32_t requantized = 0, dequantized = 0;
  for (const MergedRecord& r : records) {
    if (!r.tensor->quantized()) continue;
    ++(r.tensor->dequantize_to ? dequantized : requantized);
    min_snr = std::min(min_snr, r.figures.written.snr_db());
  }
  f->set_tensors_requantized(requantized);
  f->set_tensors_dequantized(dequantized);
  f->set_min_snr_db(min_snr);
  std::vector<const MergedRecord*> by_update;
  for (const MergedRecord& r : records) by_update.push_back(&r);
  std::stable_sort(by_update.begin(), by_update.end(), [](const MergedRecord* a, const MergedRecord* b) {
    return a->figures.relative_update > b->figures.relative_update;
  });
  for (size_t i = 0; i < by_update.size() && i < kLargestUpdatesReported; ++i) {
    v1::MergedTensor* m = f->add_largest_updates();
    m->set_name(WeightName(*by_update[i]->tensor));
    m->set_type(by_update[i]->tensor->written_type());
    m->set_adapters(by_update[i]->tensor->updates.size());
    m->set_relative_update(by_update[i]->figures.relative_update);
    m->set_snr_db(by_update[i]->figures.written.snr_db());
  }
}

ordered_json ManifestBody(const LoraMergePlan& plan, const std::vector<MergedRecord>& records) {
  ordered_json merged = ordered_json::array();
  for (const MergedRecord& r : records) {
    ordered_json modules = ordered_json::array();
    for (const MergeUpdate& u : r.tensor->updates)
      modules.push_back({{"adapter", u.adapter->uri}, {"module", u.target->module->key}});
    merged.push_back({{"name", WeightName(*r.tensor)},
                      {"type", r.tensor->type},
                      {"written_type", r.tensor->written_type()},
                      {"modules", std::move(modules)},
                      {"relative_update", FiniteOrNull(r.figures.relative_update)},
                      {"snr_db", FiniteOrNull(r.figures.written.snr_db())},
                      {"max_abs_error", r.figures.written.max_abs_error()}});
  }
  ordered_json skipped = ordered_json::array();
  for (const SkippedKey& k : plan.skipped) {
    skipped.push_back({{"adapter", k.adapter->uri},
                       {"key", k.mismatch.key},
                       {"problem", k.mismatch.problem},
                       {"closest", k.mismatch.closest}});
  }
  return {{"adapters", AdaptersJson(plan)}, {"merged", std::move(merged)}, {"skipped", std::move(skipped)}};
}

}  // namespace

absl::StatusOr<LoraMergeOptions> LoraMergeJob::Parse(const v1::JobSpec& spec) {
  if (absl::Status s = ValidateLoraMergeSpec(spec.lora_merge()); !s.ok()) return s;
  return LoraMergeOptions{spec.lora_merge()};
}

absl::StatusOr<LoraMergeJobPlan> LoraMergeJob::MakePlan(const LoraMergeOptions& options, const PlanEnv& env) {
  const v1::LoraMergeSpec& spec = options.spec;
  absl::StatusOr<std::unique_ptr<LoraMergePlan>> plan = MakeLoraMergePlan(spec, env.router);
  if (!plan.ok()) return plan.status();
  if (absl::Status s = CheckOutputShape(**plan, spec.output()); !s.ok()) return s;
  absl::StatusOr<Location> output = env.router.Resolve(spec.output());
  if (!output.ok()) return WithReason(output.status(), ReasonOf(output.status()), {{"field", "lora_merge.output"}});
  if (absl::Status s = CheckNoOverlap(**plan, output->uri); !s.ok()) return s;
  // Output rules: a directory for safetensors, one file (or its split parts) for GGUF.
  LoraMergeJobPlan job_plan;
  job_plan.directory = !(*plan)->gguf();
  job_plan.output_uris = OutputUris(**plan, output->uri, job_plan.directory);
  const bool replace = spec.overwrite() || env.attempt > 1;
  if (!job_plan.directory) {
    for (const std::string& uri : job_plan.output_uris) {
      if (absl::Status s = Publication::CheckFileVacant(env.router, uri, replace, "lora_merge.output"); !s.ok())
        return s;
    }
  } else if (absl::Status s =
                 Publication::CheckDirectoryVacant(env.router, spec.output(), replace, "lora_merge.output");
             !s.ok()) {
    return s;
  }
  uint64_t largest_adapter = 0;
  for (const auto& [index, t] : (*plan)->merged) {
    uint64_t bytes = 0;
    for (const MergeUpdate& u : t.updates) {
      bytes += 4 * (ElementCount(u.target->module->up->shape).value_or(0) +
                    ElementCount(u.target->module->down->shape).value_or(0));
    }
    // Read, then held transposed or permuted; a torch record is merged into memory whole first.
    largest_adapter = std::max(largest_adapter, 2 * bytes + ((*plan)->base.is_torch() ? t.base->size_bytes : 0));
  }
  job_plan.estimated_peak_bytes = kMergeJobBaseMemoryBytes + largest_adapter;
  job_plan.merge = std::shared_ptr<LoraMergePlan>(*std::move(plan));
  return job_plan;
}

absl::StatusOr<v1::JobResult> LoraMergeJob::Produce(LoraMergeJobPlan& job_plan, const JobRun& run,
                                                    JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  const v1::LoraMergeSpec& spec = run.spec.lora_merge();
  const LoraMergePlan& plan = *job_plan.merge;
  const bool directory = job_plan.directory;
  const std::vector<std::string>& uris = job_plan.output_uris;
  // The parts of a split base obey the same rules as the named file (the manifest's name).
  absl::StatusOr<Publication> output =
      directory
          ? Publication::ForDirectory(*run.router, spec.output(), spec.overwrite(), run.attempt, "lora_merge.output")
          : Publication::ForFile(*run.router, spec.output(), spec.overwrite(), run.attempt, "lora_merge.output",
                                 uris.size() > 1 ? uris : std::vector<std::string>{});
  if (!output.ok()) return output.status();

  ProgressTracker tracker(context, plan.base.file_bytes, plan.base.tensors.size());
  tracker.SetPhase("plan");
  for (const auto& a : plan.adapters) {
    context.Log(absl::StrFormat(
        "adapter '%s': %s keys, %d module(s), config from %s, strength %g, %d module(s) matched", a->uri,
        a->adapter.style, a->adapter.modules.size(), a->adapter.config_source, a->strength, a->match.targets.size()));
  }
  context.Log(absl::StrFormat("merging %d adapter(s) into %d of %d tensors of '%s' (%s, %d file(s)); output '%s'",
                              plan.adapters.size(), plan.merged.size(), plan.base.tensors.size(), plan.base.uri,
                              plan.base.format, plan.base.files.size(), output->uri()));
  for (const SkippedKey& k : plan.skipped) {
    context.Warn("LORA_KEY_SKIPPED",
                 absl::StrCat("adapter '", k.adapter->uri, "' key '", k.mismatch.key,
                              "' is left out: ", DescribeMismatch(k.mismatch)),
                 k.mismatch.key);
  }
  WarnPolicies(plan, context);

  RateLimiter pace(run.io_bytes_per_second);
  MergeState state;
  state.records.reserve(plan.merged.size());  // records are pointed to while they are filled
  const std::string role = plan.base.files.size() == 1 ? "model" : "shard";
  for (size_t i = 0; i < plan.base.files.size(); ++i) {
    tracker.SetPhase("execute");
    absl::StatusOr<v1::Artifact> artifact = output->Write(
        uris[i], role,
        [&](PipelinedWriter& out) {
          return WriteMergedFile(plan, i, out, MergeIo{tracker, pace, context}, state);
        },
        tracker, context);
    if (!artifact.ok()) return artifact.status();
  }
  uint32_t files_copied = 0;
  if (directory) {
    absl::StatusOr<Location> base_location = run.router->Resolve(plan.base.uri);
    if (!base_location.ok()) return base_location.status();
    absl::StatusOr<std::vector<SideFile>> side = MakeSideFiles(plan, *base_location->store, context);
    if (!side.ok()) return side.status();
    for (const SideFile& file : *side) {
      absl::StatusOr<v1::Artifact> artifact = output->WriteSmall(output->UriOf(file.name), file.bytes, file.role);
      if (!artifact.ok()) return artifact.status();
      files_copied += file.role != "index";
    }
  }

  v1::JobResult result;
  v1::JobFigures* figures = result.mutable_figures();
  FillFigures(plan, state.records, figures->mutable_lora_merge());
  figures->mutable_lora_merge()->set_files_copied(files_copied);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  figures->set_duration_seconds(seconds);
  figures->set_bytes_read(plan.base.file_bytes);
  figures->set_tensors(plan.base.tensors.size());
  figures->set_throughput_bytes_per_second(seconds > 0 ? plan.base.file_bytes / seconds : 0);
  tracker.Flush();
  figures->set_peak_resident_bytes(tracker.peak_resident_bytes());

  ordered_json manifest = ManifestHeader(run, "lora_merge", plan.base);
  manifest["lora_merge"] = ManifestBody(plan, state.records);
  manifest["figures"] = MessageJson(*figures);
  if (absl::Status s = output->Publish(std::move(manifest), result, tracker, context); !s.ok()) return s;
  return result;
}

}  // namespace modelsmith
