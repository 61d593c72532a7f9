#include "workers/jobs/job_kinds.h"

#include "workers/jobs/pipeline/pipeline_job.h"

#include <array>
#include <exception>
#include <new>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/jobs/bisect/bisect_job.h"
#include "workers/jobs/convert/convert_job.h"
#include "workers/jobs/lora_merge/lora_merge_job.h"
#include "workers/jobs/quantize/quantize_job.h"
#include "workers/jobs/shard/shard_job.h"

namespace modelsmith {
namespace {

// One row per kind. The lambdas pick the kind's message out of the spec; the registry calls a
// row only for a spec whose oneof holds that kind.
const std::array<JobKindEntry, 5> kKinds = {{
    {v1::JOB_KIND_SHARD, "shard", "shard.output", ValidateKind<ShardJob>, PreflightKind<ShardJob>, RunKind<ShardJob>,
     [](const v1::JobSpec& s) -> const std::string& { return s.shard().output(); }},
    {v1::JOB_KIND_QUANTIZE, "quantize", "quantize.output", ValidateKind<QuantizeJob>, PreflightKind<QuantizeJob>,
     RunKind<QuantizeJob>, [](const v1::JobSpec& s) -> const std::string& { return s.quantize().output(); }},
    {v1::JOB_KIND_CONVERT, "convert", "convert.output", ValidateKind<ConvertJob>, PreflightKind<ConvertJob>,
     RunKind<ConvertJob>, [](const v1::JobSpec& s) -> const std::string& { return s.convert().output(); }},
    {v1::JOB_KIND_BISECT, "bisect", "bisect.output", ValidateKind<BisectJob>, PreflightKind<BisectJob>,
     RunKind<BisectJob>, [](const v1::JobSpec& s) -> const std::string& { return s.bisect().output(); }},
    {v1::JOB_KIND_LORA_MERGE, "lora_merge", "lora_merge.output", ValidateKind<LoraMergeJob>,
     PreflightKind<LoraMergeJob>, RunKind<LoraMergeJob>,
     [](const v1::JobSpec& s) -> const std::string& { return s.lora_merge().output(); }},
}};

const JobKindEntry* EntryOf(v1::JobKind kind) {
  for (const JobKindEntry& entry : kKinds) {
    if (entry.kind == kind) return &entry;
  }
  return nullptr;
}

// A bug or an exhausted allocator in a kind must fail that job (or that submit) with a reason,
// never take down the server or leave `modelsmith run` aborting with its staging files.
template <typename T, typename F>
absl::StatusOr<T> Guarded(F&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return MakeError(absl::StatusCode::kResourceExhausted, "OUT_OF_MEMORY",
                     "the job asked for more memory than could be allocated");
  } catch (const std::exception& e) {
    return MakeError(absl::StatusCode::kInternal, "INTERNAL", absl::StrCat("job failed unexpectedly: ", e.what()));
  } catch (...) {
    return MakeError(absl::StatusCode::kInternal, "INTERNAL", "job failed unexpectedly: a non-standard exception");
  }
}

// The kind's own functions, for the pipeline driver to run per component.
PipelineKind PipelineKindOf(const JobKindEntry& entry, const StorageRouter& router) {
  return PipelineKind{entry.name, entry.output_field,
                      [&entry, &router](const v1::JobSpec& spec) { return entry.preflight(spec, router, nullptr); },
                      [&entry](const JobRun& run, JobContext& context) { return entry.run(run, context); }};
}

absl::Status NotAPipeline(const JobKindEntry& entry) {
  return FieldError(
      "NOT_A_PIPELINE", "components",
      absl::StrCat("components, component_options and input_variant apply to a diffusers pipeline input (a directory "
                   "with model_index.json); this ",
                   entry.name, " job's input is not one"));
}

absl::Status NoKind() {
  return FieldError("MISSING_FIELD", "spec", "'spec' must hold one of convert, quantize, shard, bisect, lora_merge");
}

}  // namespace

v1::JobKind KindOf(const v1::JobSpec& spec) {
  switch (spec.kind_case()) {
    case v1::JobSpec::kConvert: return v1::JOB_KIND_CONVERT;
    case v1::JobSpec::kQuantize: return v1::JOB_KIND_QUANTIZE;
    case v1::JobSpec::kShard: return v1::JOB_KIND_SHARD;
    case v1::JobSpec::kBisect: return v1::JOB_KIND_BISECT;
    case v1::JobSpec::kLoraMerge: return v1::JOB_KIND_LORA_MERGE;
    case v1::JobSpec::KIND_NOT_SET: break;
  }
  return v1::JOB_KIND_UNSPECIFIED;
}

const JobKindEntry* FindJobKind(const v1::JobSpec& spec) { return EntryOf(KindOf(spec)); }

absl::string_view KindName(v1::JobKind kind) {
  const JobKindEntry* entry = EntryOf(kind);
  return entry == nullptr ? absl::string_view("unspecified") : entry->name;
}

absl::Status ValidateSpec(const v1::JobSpec& spec) {
  const JobKindEntry* entry = FindJobKind(spec);
  if (entry == nullptr) return NoKind();
  if (absl::Status s = ValidatePipelineFields(spec); !s.ok()) return s;
  return entry->validate(spec);
}

absl::StatusOr<uint64_t> PreflightJob(const v1::JobSpec& spec, const StorageRouter& router,
                                      const std::function<absl::Status()>& after_parse) {
  const JobKindEntry* entry = FindJobKind(spec);
  if (entry == nullptr) return NoKind();
  return Guarded<uint64_t>([&]() -> absl::StatusOr<uint64_t> {
    absl::StatusOr<std::optional<std::string>> pipeline = PipelineInput(spec, router);
    if (!pipeline.ok()) return pipeline.status();
    if (!*pipeline) {
      if (!spec.components().empty() || !spec.component_options().empty() || !spec.input_variant().empty())
        return NotAPipeline(*entry);
      return entry->preflight(spec, router, after_parse);
    }
    if (absl::Status s = entry->validate(spec); !s.ok()) return s;
    if (after_parse) {
      if (absl::Status s = after_parse(); !s.ok()) return s;
    }
    return PreflightPipeline(spec, **pipeline, router, PipelineKindOf(*entry, router));
  });
}

absl::StatusOr<v1::JobResult> RunJob(const JobRun& run, JobContext& context) {
  const JobKindEntry* entry = FindJobKind(run.spec);
  if (entry == nullptr) return NoKind();
  return Guarded<v1::JobResult>([&]() -> absl::StatusOr<v1::JobResult> {
    absl::StatusOr<std::optional<std::string>> pipeline = PipelineInput(run.spec, *run.router);
    if (!pipeline.ok()) return pipeline.status();
    if (!*pipeline) {
      if (!run.spec.components().empty() || !run.spec.component_options().empty() || !run.spec.input_variant().empty())
        return NotAPipeline(*entry);
      return entry->run(run, context);
    }
    return RunPipeline(run, context, **pipeline, PipelineKindOf(*entry, *run.router));
  });
}

absl::StatusOr<JobOutput> ResolveJobOutput(const v1::JobSpec& spec, const StorageRouter& router) {
  const JobKindEntry* entry = FindJobKind(spec);
  if (entry == nullptr) return NoKind();
  absl::StatusOr<Location> location = router.Resolve(entry->output(spec));
  if (!location.ok())
    return WithReason(location.status(), ReasonOf(location.status()), {{"field", std::string(entry->output_field)}});
  // A trailing separator names the same directory.
  std::string uri = location->uri;
  while (uri.size() > 1 && uri.back() == '/') uri.pop_back();
  return JobOutput{std::move(uri), std::string(entry->output_field)};
}

bool OutputsOverlap(absl::string_view a, absl::string_view b) {
  if (a.size() > b.size()) std::swap(a, b);
  // `a` is the shorter: the same place, or a directory that holds `b`.
  return a == b || (absl::StartsWith(b, a) && (a.back() == '/' || b[a.size()] == '/'));
}

}  // namespace modelsmith
