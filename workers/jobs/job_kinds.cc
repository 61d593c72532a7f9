#include "workers/jobs/job_kinds.h"

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/jobs/bisect_job.h"
#include "workers/jobs/convert_job.h"
#include "workers/jobs/convert_plan.h"
#include "workers/jobs/lora_merge_job.h"
#include "workers/jobs/lora_merge_plan.h"
#include "workers/jobs/quantize_job.h"
#include "workers/jobs/shard_job.h"

namespace modelsmith {
namespace {

absl::Status KindNotBuilt(v1::JobKind kind) {
  return MakeError(absl::StatusCode::kUnimplemented, "KIND_NOT_IMPLEMENTED",
                   absl::StrCat("job kind '", KindName(kind),
                                "' is not available in this build of modelsmithd"),
                   {{"field", std::string(KindName(kind))}});
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

absl::string_view KindName(v1::JobKind kind) {
  switch (kind) {
    case v1::JOB_KIND_CONVERT: return "convert";
    case v1::JOB_KIND_QUANTIZE: return "quantize";
    case v1::JOB_KIND_SHARD: return "shard";
    case v1::JOB_KIND_BISECT: return "bisect";
    case v1::JOB_KIND_LORA_MERGE: return "lora_merge";
    default: return "unspecified";
  }
}

absl::Status ValidateSpec(const v1::JobSpec& spec) {
  const v1::JobKind kind = KindOf(spec);
  switch (kind) {
    case v1::JOB_KIND_SHARD:
      return ValidateShardSpec(spec.shard());
    case v1::JOB_KIND_QUANTIZE:
      return ValidateQuantizeSpec(spec.quantize());
    case v1::JOB_KIND_CONVERT:
      return ValidateConvertSpec(spec.convert());
    case v1::JOB_KIND_LORA_MERGE:
      return ValidateLoraMergeSpec(spec.lora_merge());
    case v1::JOB_KIND_BISECT:
      return ValidateBisectSpec(spec.bisect());
    case v1::JOB_KIND_UNSPECIFIED:
      return MakeError(absl::StatusCode::kInvalidArgument, "MISSING_FIELD",
                       "'spec' must hold one of convert, quantize, shard, bisect, lora_merge",
                       {{"field", "spec"}});
    default:
      return KindNotBuilt(kind);
  }
}

absl::StatusOr<uint64_t> PreflightJob(const v1::JobSpec& spec, const StorageRouter& router) {
  if (absl::Status s = ValidateSpec(spec); !s.ok()) return s;
  if (KindOf(spec) == v1::JOB_KIND_SHARD) return PreflightShardJob(spec.shard(), router);
  if (KindOf(spec) == v1::JOB_KIND_QUANTIZE) return PreflightQuantizeJob(spec.quantize(), router);
  if (KindOf(spec) == v1::JOB_KIND_CONVERT) return PreflightConvertJob(spec.convert(), router);
  if (KindOf(spec) == v1::JOB_KIND_LORA_MERGE) return PreflightLoraMergeJob(spec.lora_merge(), router);
  if (KindOf(spec) == v1::JOB_KIND_BISECT) return PreflightBisectJob(spec.bisect(), router);
  return KindNotBuilt(KindOf(spec));
}

absl::StatusOr<v1::JobResult> RunJob(const JobRun& run, JobContext& context) {
  if (absl::Status s = ValidateSpec(run.spec); !s.ok()) return s;
  if (KindOf(run.spec) == v1::JOB_KIND_SHARD) return RunShardJob(run, context);
  if (KindOf(run.spec) == v1::JOB_KIND_QUANTIZE) return RunQuantizeJob(run, context);
  if (KindOf(run.spec) == v1::JOB_KIND_CONVERT) return RunConvertJob(run, context);
  if (KindOf(run.spec) == v1::JOB_KIND_LORA_MERGE) return RunLoraMergeJob(run, context);
  if (KindOf(run.spec) == v1::JOB_KIND_BISECT) return RunBisectJob(run, context);
  return KindNotBuilt(KindOf(run.spec));
}

}  // namespace modelsmith
