#include "workers/jobs/shard/shard_job.h"

#include <algorithm>
#include <chrono>
#include <future>
#include <numeric>
#include <set>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "workers/common/error.h"
#include "workers/formats/model_view.h"
#include "workers/formats/safetensors.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/shard/shard_plan.h"
#include "workers/jobs/core/size_string.h"
#include "workers/storage/checksum.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

// Cancellation is polled between pieces of this size inside a tensor's copy.
constexpr uint64_t kCopyPieceBytes = 64 << 20;
// Shards verified at once, each on its own thread beside the copying one: enough to keep two
// cores busy hashing while the kernel copies, and a bound on threads and open files.
constexpr size_t kMaxVerifying = 2;
// Fixed memory of a shard job beyond the headers: hash and fallback-copy buffers, bookkeeping.
constexpr uint64_t kShardJobBaseMemoryBytes = 32 << 20;

// Parsed max_shard_size with the field named in errors.
absl::StatusOr<uint64_t> ShardLimit(const v1::ShardSpec& spec) {
  if (spec.max_shard_size().empty()) {
    return FieldError("MISSING_FIELD", "shard.max_shard_size",
                      "'shard.max_shard_size' is required (e.g. \"5GB\", \"2GiB\", or \"0\" for one file)");
  }
  absl::StatusOr<uint64_t> limit = ParseSize(spec.max_shard_size());
  if (!limit.ok()) return WithReason(limit.status(), "INVALID_SIZE", {{"field", "shard.max_shard_size"}});
  return limit;
}

absl::StatusOr<ModelView> OpenInput(const ShardOptions& options, const StorageRouter& router) {
  absl::StatusOr<Location> input = router.Resolve(options.input);
  if (!input.ok()) return WithReason(input.status(), ReasonOf(input.status()), {{"field", "shard.input"}});
  absl::StatusOr<ModelView> model = OpenModel(*input);
  if (!model.ok()) return WithReason(model.status(), ReasonOf(model.status()), {{"field", "shard.input"}});
  if (model->format == "gguf" || model->is_torch()) {
    return MakeError(
        absl::StatusCode::kInvalidArgument, "UNSUPPORTED_FORMAT",
        absl::StrCat("input '", model->uri, "' is ", model->format,
                     "; the shard job reshards safetensors checkpoints (the convert job turns torch checkpoints "
                     "into sharded safetensors)"),
        {{"field", "shard.input"}});
  }
  if (model->tensors.empty()) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "MODEL_EMPTY",
                     absl::StrCat("input '", model->uri, "' holds no tensors; there is nothing to shard"),
                     {{"field", "shard.input"}});
  }
  return model;
}

uint64_t EstimatePeakMemory(const ModelView& model) {
  uint64_t header_bytes = 0;
  for (const ModelFile& file : model.files) header_bytes += file.header.header_bytes;
  // Parsed JSON and tensor tables take several times the header text.
  return kShardJobBaseMemoryBytes + 8 * header_bytes;
}

// The shards, and the tensors larger than the limit (each gets a shard of its own).
std::vector<PlannedShard> PlanOutput(const ShardOptions& options, const ModelView& model,
                                     std::vector<const TensorInfo*>& oversized) {
  const uint64_t limit = options.max_shard_size_bytes;
  std::vector<uint64_t> sizes;
  sizes.reserve(model.tensors.size());
  for (const TensorInfo& t : model.tensors) sizes.push_back(t.size_bytes);
  const ShardAssignment assignment = options.strategy == v1::SHARD_STRATEGY_BALANCED ? PlanShardsBalanced(sizes, limit)
                                                                                     : PlanShardsHfGreedy(sizes, limit);
  std::map<std::string, std::string> metadata = model.metadata;
  metadata.try_emplace("format", "pt");

  std::vector<PlannedShard> shards(assignment.size());
  for (size_t s = 0; s < assignment.size(); ++s) {
    PlannedShard& shard = shards[s];
    shard.name = ShardFileName(options.stem, options.variant, s, assignment.size());
    std::vector<size_t> order = assignment[s];
    std::vector<SafetensorsEntry> entries;
    for (size_t i : order) {
      const TensorInfo& t = model.tensors[i];
      entries.push_back({t.name, t.dtype, t.shape, t.size_bytes});
      if (limit > 0 && t.size_bytes > limit) oversized.push_back(&t);
    }
    SortLikeReferenceWriter(entries);
    std::map<absl::string_view, const TensorInfo*> by_name;
    for (size_t i : order) by_name[model.tensors[i].name] = &model.tensors[i];
    for (const SafetensorsEntry& e : entries) shard.sources.push_back(by_name[e.name]);
    shard.header = SerializeSafetensorsHeader(entries, metadata);
    shard.file_bytes = shard.header.size();
    for (const SafetensorsEntry& e : entries) shard.file_bytes += e.size_bytes;
    shard.entries = std::move(entries);
  }
  return shards;
}

// Re-reads a written shard's header: it parses, the tensors match the plan, the size matches.
absl::Status CheckShard(const RandomAccessObject& written, const PlannedShard& plan) {
  absl::StatusOr<SafetensorsHeader> header = ReadSafetensorsHeader(written);
  if (!header.ok()) return Annotate(header.status(), absl::StrCat("verifying '", plan.name, "'"));
  auto mismatch = [&](absl::string_view what) {
    return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                     absl::StrCat("shard '", plan.name, "' as written does not match its plan: ", what),
                     {{"file", plan.name}});
  };
  if (written.size_bytes() != plan.file_bytes) return mismatch("file size");
  if (header->tensors.size() != plan.entries.size()) return mismatch("tensor count");
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const TensorInfo& got = header->tensors[i];
    const SafetensorsEntry& want = plan.entries[i];
    if (got.name != want.name || got.dtype != want.dtype || got.shape != want.shape ||
        got.size_bytes != want.size_bytes) {
      return mismatch(absl::StrCat("tensor '", want.name, "'"));
    }
  }
  return absl::OkStatus();
}

// CheckShard, then the SHA-256 of the file.
absl::StatusOr<std::string> VerifyShard(const RandomAccessObject& written, const PlannedShard& plan,
                                        const JobContext& context) {
  if (absl::Status s = CheckShard(written, plan); !s.ok()) return s;
  return Sha256Hex(written, nullptr, [&] { return context.stop_requested(); });
}

std::string IndexJson(const ModelView& model, const std::vector<PlannedShard>& shards) {
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (const PlannedShard& shard : shards) {
    for (const SafetensorsEntry& e : shard.entries) weight_map.emplace_back(e.name, shard.name);
  }
  return HfIndexJson(model.index_metadata, model.tensor_bytes, weight_map);
}

}  // namespace

absl::StatusOr<ShardOptions> ShardJob::Parse(const v1::JobSpec& job_spec) {
  const v1::ShardSpec& spec = job_spec.shard();
  if (spec.input().empty()) return FieldError("MISSING_FIELD", "shard.input", "'shard.input' is required");
  if (spec.output().empty()) return FieldError("MISSING_FIELD", "shard.output", "'shard.output' is required");
  absl::StatusOr<uint64_t> limit = ShardLimit(spec);
  if (!limit.ok()) return limit.status();
  if (!v1::ShardStrategy_IsValid(spec.strategy())) {
    return FieldError("INVALID_ENUM", "shard.strategy", "unknown shard strategy");
  }
  ShardOptions options;
  options.input = spec.input();
  options.output = spec.output();
  options.max_shard_size_bytes = *limit;
  options.strategy = spec.strategy();
  options.stem = spec.stem().empty() ? "model" : spec.stem();
  options.variant = spec.variant();
  options.overwrite = spec.overwrite();
  if (absl::Status s = ValidateShardNaming(options.stem, options.variant); !s.ok()) {
    const std::string field = ContextOf(s)["field"];
    return WithReason(s, ReasonOf(s), {{"field", absl::StrCat("shard.", field)}});
  }
  return options;
}

absl::StatusOr<ShardJobPlan> ShardJob::MakePlan(const ShardOptions& options, const PlanEnv& env) {
  absl::StatusOr<ModelView> model = OpenInput(options, env.router);
  if (!model.ok()) return model.status();
  if (absl::Status s = Publication::CheckApartFromInput(*model, env.router, options.output, "shard.output"); !s.ok())
    return s;
  if (absl::Status s = Publication::CheckDirectoryVacant(env.router, options.output,
                                                         options.overwrite || env.attempt > 1, "shard.output");
      !s.ok()) {
    return s;
  }
  ShardJobPlan plan;
  plan.options = options;
  plan.shards = PlanOutput(options, *model, plan.oversized);
  if (plan.shards.size() > kMaxShardCount) {
    return FieldError("TOO_MANY_SHARDS", "shard.max_shard_size",
                      absl::StrCat("the limit gives ", plan.shards.size(), " shards; at most ", kMaxShardCount,
                                   " fit Hugging Face names"));
  }
  plan.estimated_peak_bytes = EstimatePeakMemory(*model);
  plan.model = *std::move(model);
  return plan;
}

absl::StatusOr<v1::JobResult> ShardJob::Produce(ShardJobPlan& plan, const JobRun& run, JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  const ShardOptions& options = plan.options;
  const uint64_t limit = options.max_shard_size_bytes;
  const ModelView* model = &plan.model;
  const std::vector<PlannedShard>& shards = plan.shards;
  for (const TensorInfo* t : plan.oversized) {
    context.Warn("SHARD_TENSOR_OVER_LIMIT",
                 absl::StrCat("tensor '", t->name, "' has ", t->size_bytes, " bytes, more than max_shard_size (", limit,
                              " bytes); it gets a shard of its own"),
                 t->name);
  }
  ProgressTracker tracker(context, model->tensor_bytes, model->tensors.size());
  tracker.SetPhase("plan");
  absl::StatusOr<Publication> output =
      Publication::ForDirectory(*run.router, options.output, options.overwrite, run.attempt, "shard.output");
  if (!output.ok()) return output.status();
  context.Log(absl::StrCat("sharding ", model->tensors.size(), " tensors (", model->tensor_bytes, " bytes) from '",
                           model->uri, "' into ", shards.size(), " file(s) at '", output->uri(), "'"));

  // Writers stay uncommitted (invisible) until every shard is written and verified; then the
  // publication takes them.
  std::vector<std::unique_ptr<ObjectWriter>> writers;
  std::vector<std::future<absl::StatusOr<std::string>>> verifications(shards.size());
  std::vector<std::string> digests(shards.size());
  size_t collected = 0;  // verifications before this index have been collected into digests
  auto fail = [&](absl::Status status) -> absl::Status {
    for (auto& v : verifications) {
      if (v.valid()) v.wait();
    }
    for (auto& w : writers) w->Abort();
    return status;
  };
  // Collects verifications in shard order until at most `max_pending` of the first `launched`
  // are still running.
  auto collect = [&](size_t launched, size_t max_pending) -> absl::Status {
    for (; collected < launched && launched - collected > max_pending; ++collected) {
      if (!verifications[collected].valid()) continue;  // the store verifies after commit
      absl::StatusOr<std::string> digest = verifications[collected].get();
      if (!digest.ok()) return absl::IsCancelled(digest.status()) ? StopStatus(context) : digest.status();
      digests[collected] = *digest;
    }
    return absl::OkStatus();
  };

  tracker.SetPhase("execute");
  RateLimiter pace(run.io_bytes_per_second);
  uint64_t bytes_read = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const PlannedShard& shard = shards[s];
    absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = output->OpenWriter(output->UriOf(shard.name));
    if (!writer.ok()) return fail(writer.status());
    writers.push_back(*std::move(writer));
    ObjectWriter& out = *writers.back();
    if (absl::Status st = out.Append({reinterpret_cast<const std::byte*>(shard.header.data()), shard.header.size()});
        !st.ok()) {
      return fail(st);
    }
    for (const TensorInfo* source : shard.sources) {
      const RandomAccessObject& file = *model->files[source->file_index].object;
      for (uint64_t done = 0; done < source->size_bytes;) {
        if (absl::Status st = StopStatus(context); !st.ok()) return fail(st);
        const uint64_t piece = pace.PieceBytes(std::min(kCopyPieceBytes, source->size_bytes - done));
        if (absl::Status st = out.AppendFrom(file, source->data_offset + done, piece); !st.ok()) {
          return fail(Annotate(st, absl::StrCat("copying tensor '", source->name, "'")));
        }
        done += piece;
        bytes_read += piece;
        tracker.AddBytes(piece);
        pace.Account(piece, [&] { return context.stop_requested(); });
      }
      tracker.AddTensors(1);
    }
    // Verify this shard on another thread while the next one is copied.
    absl::StatusOr<std::unique_ptr<RandomAccessObject>> readback = out.ReadBack();
    if (readback.ok()) {
      if (absl::Status st = collect(s, kMaxVerifying - 1); !st.ok()) return fail(st);
      ObjectWriter* writer = writers.back().get();
      verifications[s] = std::async(
          std::launch::async,
          [&, s, writer,
           object = std::shared_ptr<RandomAccessObject>(*std::move(readback))]() -> absl::StatusOr<std::string> {
            absl::StatusOr<std::string> digest = VerifyShard(*object, shards[s], context);
            // Flush to disk here, overlapped with the next shard's copy, so publishing is a rename.
            if (digest.ok()) {
              if (absl::Status synced = writer->Sync(); !synced.ok()) return synced;
            }
            return digest;
          });
    } else if (absl::IsUnimplemented(readback.status())) {
      // Verified after commit; meanwhile the writer uploads what it holds and keeps nothing.
      if (absl::Status st = out.Sync(); !st.ok()) return fail(st);
    } else {
      return fail(readback.status());
    }
  }

  tracker.SetPhase("verify");
  if (absl::Status st = collect(shards.size(), 0); !st.ok()) return fail(st);
  if (absl::Status st = StopStatus(context); !st.ok()) return fail(st);

  // An empty digest: the store reads only committed objects; the publication checks it then.
  for (size_t s = 0; s < shards.size(); ++s) {
    v1::Artifact artifact;
    artifact.set_uri(output->UriOf(shards[s].name));
    artifact.set_size_bytes(shards[s].file_bytes);
    artifact.set_sha256(digests[s]);
    artifact.set_role(shards.size() == 1 ? "model" : "shard");
    output->Hold(std::move(writers[s]), std::move(artifact),
                 [&shard = shards[s]](const RandomAccessObject& written) { return CheckShard(written, shard); });
  }
  writers.clear();
  if (shards.size() > 1) {
    const std::string index_name = IndexFileName(options.stem, options.variant);
    absl::StatusOr<v1::Artifact> index =
        output->WriteSmall(output->UriOf(index_name), IndexJson(*model, shards), "index");
    if (!index.ok()) return index.status();
  }

  v1::JobResult result;
  // Figures.
  v1::JobFigures* figures = result.mutable_figures();
  v1::ShardFigures* shard_figures = figures->mutable_shard();
  uint64_t largest = 0;
  uint64_t sum = 0;
  for (const PlannedShard& shard : shards) {
    shard_figures->add_shard_sizes_bytes(shard.file_bytes);
    largest = std::max(largest, shard.file_bytes);
    sum += shard.file_bytes;
  }
  shard_figures->set_shard_count(shards.size());
  shard_figures->set_max_shard_size_bytes(limit);
  shard_figures->set_imbalance_ratio(static_cast<double>(largest) / (static_cast<double>(sum) / shards.size()));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  figures->set_duration_seconds(seconds);
  figures->set_bytes_read(bytes_read);
  figures->set_tensors(model->tensors.size());
  figures->set_throughput_bytes_per_second(seconds > 0 ? bytes_read / seconds : 0);
  tracker.Flush();
  figures->set_peak_resident_bytes(tracker.peak_resident_bytes());

  ordered_json manifest = ManifestHeader(run, "shard", *model);
  manifest["figures"] = MessageJson(*figures);
  if (absl::Status st = output->Publish(std::move(manifest), result, tracker, context); !st.ok()) return st;
  return result;
}

}  // namespace modelsmith
