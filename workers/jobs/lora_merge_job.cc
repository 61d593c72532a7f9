#include "workers/jobs/lora_merge_job.h"

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
#include "workers/jobs/lora_merge_plan.h"
#include "workers/jobs/lora_merge_tensor.h"
#include "workers/jobs/output_location.h"
#include "workers/jobs/progress_tracker.h"
#include "workers/jobs/quantize_report.h"
#include "workers/jobs/rate_limiter.h"
#include "workers/jobs/verified_commit.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

constexpr uint64_t kQueuedWriteBytes = 32 << 20;
// The writer's queue, a chunk being made, per-thread scratch and bookkeeping; the adapters'
// matrices of one tensor come on top.
constexpr uint64_t kMergeJobBaseMemoryBytes = 96 << 20;
// Small files copied beside a safetensors base's tensors.
constexpr uint64_t kSmallFileMaxBytes = 64 << 20;
constexpr size_t kLargestUpdatesReported = 10;

absl::Status FieldError(absl::string_view reason, absl::string_view field, absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, reason, message, {{"field", std::string(field)}});
}

// The output follows the base: a .gguf file for a GGUF base, a directory otherwise.
absl::Status CheckOutputShape(const LoraMergePlan& plan, const std::string& output) {
  const bool gguf_output = absl::EndsWith(output, ".gguf");
  if (plan.gguf() && !gguf_output) {
    return FieldError("INVALID_OUTPUT", "lora_merge.output",
                      absl::StrCat("base '", plan.base.uri, "' is GGUF, so the output must be a .gguf file, not '", output, "'"));
  }
  if (!plan.gguf() && (gguf_output || absl::EndsWith(output, ".safetensors"))) {
    return FieldError("INVALID_OUTPUT", "lora_merge.output",
                      absl::StrCat("the output of a safetensors base is a directory that receives its files; '", output, "' names a file"));
  }
  return absl::OkStatus();
}

absl::Status CheckNoOverlap(const LoraMergePlan& plan, const std::string& output_uri) {
  for (const ModelFile& file : plan.base.files) {
    if (file.uri == output_uri || ParentUri(file.uri) == output_uri) {
      return FieldError("OUTPUT_OVERLAPS_INPUT", "lora_merge.output",
                        absl::StrCat("output '", output_uri, "' would overwrite base file '", file.uri, "'; write elsewhere"));
    }
  }
  return absl::OkStatus();
}

// Where each base file goes.
std::vector<std::string> OutputUris(const LoraMergePlan& plan, const std::string& output_uri, const OutputLocation* directory) {
  std::vector<std::string> uris;
  const size_t n = plan.base.files.size();
  for (size_t i = 0; i < n; ++i) {
    if (directory != nullptr) {
      uris.push_back(directory->UriOf(plan.base.files[i].name));
    } else if (n == 1) {
      uris.push_back(output_uri);
    } else {
      uris.push_back(GgufSplitUri(output_uri.substr(0, output_uri.size() - std::strlen(".gguf")), i + 1, n));
    }
  }
  return uris;
}

absl::StatusOr<std::string> ReadSmallObject(ObjectStore& store, const std::string& uri) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(uri);
  if (!object.ok()) return object.status();
  const uint64_t size = (*object)->size_bytes();
  if (size > kSmallFileMaxBytes) {
    return MakeError(absl::StatusCode::kInvalidArgument, "MODEL_CONFIG_INVALID", absl::StrCat("'", uri, "' is larger than 64 MiB"),
                     {{"file", uri}});
  }
  std::string text(size, '\0');
  if (absl::Status s = (*object)->ReadAt(0, size, reinterpret_cast<std::byte*>(text.data())); !s.ok()) return s;
  return text;
}

// The written file must have the base file's size and, byte for byte, its header (everything
// before the first tensor's data), so its tensor table is the base's.
absl::Status CheckMirrored(const RandomAccessObject& written, const ModelFile& base, uint64_t header_bytes) {
  auto mismatch = [&](absl::string_view what) {
    return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                     absl::StrCat("'", written.uri(), "' as written does not match base file '", base.name, "': ", what),
                     {{"file", base.name}});
  };
  if (written.size_bytes() != base.object->size_bytes()) return mismatch("size");
  std::string expected(header_bytes, '\0'), got(header_bytes, '\0');
  if (absl::Status s = base.object->ReadAt(0, header_bytes, reinterpret_cast<std::byte*>(expected.data())); !s.ok()) return s;
  if (absl::Status s = written.ReadAt(0, header_bytes, reinterpret_cast<std::byte*>(got.data())); !s.ok()) return s;
  if (expected != got) return mismatch("header");
  return absl::OkStatus();
}

struct MergedRecord {
  const MergeTensor* tensor;
  MergedTensorFigures figures;
};

// What the file walk carries from file to file: the merged tensors' figures, and the requantized
// groups whose tensors are not all written yet (a bitsandbytes weight and its SCB may sit in
// different shards).
struct MergeState {
  std::vector<MergedRecord> records;
  std::map<size_t, std::map<std::string, std::string>> group_bytes;  // by key in plan.merged
};

// Appends base tensor `t`, a member of the merged quantized group at `key`: the whole group is
// requantized when its first member comes, and each member is written from memory.
absl::Status WriteGroupMember(const LoraMergePlan& plan, size_t key, const TensorInfo& t, const RandomAccessObject& source,
                              PipelinedWriter& out, ProgressTracker& tracker, RateLimiter& pace, const JobContext& context,
                              MergeState& state) {
  auto cached = state.group_bytes.find(key);
  if (cached == state.group_bytes.end()) {
    const MergeTensor& m = plan.merged.at(key);
    absl::StatusOr<std::vector<LowRankUpdate>> updates = LoadUpdates(m);
    if (!updates.ok()) return updates.status();
    state.records.push_back({&m, {}});
    absl::StatusOr<std::map<std::string, std::string>> group =
        RequantizeMergedGroup(m, *std::move(updates), source, pace, context, &state.records.back().figures);
    if (!group.ok()) return group.status();
    cached = state.group_bytes.emplace(key, *std::move(group)).first;
  }
  auto bytes = cached->second.find(t.name);
  if (bytes == cached->second.end() || bytes->second.size() != t.size_bytes) {
    return MakeError(absl::StatusCode::kInternal, "INTERNAL", absl::StrCat("requantized group has no tensor '", t.name, "' of its size"),
                     {{"tensor", t.name}});
  }
  if (absl::Status s = out.Append({reinterpret_cast<const std::byte*>(bytes->second.data()), bytes->second.size()}); !s.ok()) return s;
  tracker.AddBytes(t.size_bytes);
  cached->second.erase(bytes);
  if (cached->second.empty()) state.group_bytes.erase(cached);
  return absl::OkStatus();
}

// Mirrors base file `file_index` into `out`, merged tensors rewritten. Returns the header size.
absl::StatusOr<uint64_t> WriteFile(const LoraMergePlan& plan, size_t file_index, PipelinedWriter& out, ProgressTracker& tracker,
                                   RateLimiter& pace, const JobContext& context, MergeState& state) {
  const ModelFile& file = plan.base.files[file_index];
  const RandomAccessObject& source = *file.object;
  std::vector<size_t> order;
  for (size_t i = 0; i < plan.base.tensors.size(); ++i) {
    if (plan.base.tensors[i].file_index == file_index) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return plan.base.tensors[a].data_offset < plan.base.tensors[b].data_offset; });
  const uint64_t header_bytes = order.empty() ? source.size_bytes() : plan.base.tensors[order.front()].data_offset;
  uint64_t position = 0;
  for (size_t i : order) {
    const TensorInfo& t = plan.base.tensors[i];
    if (t.data_offset < position) {
      return MakeError(absl::StatusCode::kInvalidArgument, "MODEL_TENSORS_OVERLAP",
                       absl::StrCat("tensor '", t.name, "' of '", file.name, "' overlaps the tensor before it"), {{"tensor", t.name}});
    }
    if (absl::Status s = CopyByteRange(source, position, t.data_offset - position, out, tracker, pace, context); !s.ok()) return s;
    auto merged = plan.merged.find(i);
    if (auto member = plan.group_member.find(i); member != plan.group_member.end()) {
      if (absl::Status s = WriteGroupMember(plan, member->second, t, source, out, tracker, pace, context, state); !s.ok()) return s;
    } else if (merged == plan.merged.end()) {
      if (absl::Status s = CopyByteRange(source, t.data_offset, t.size_bytes, out, tracker, pace, context); !s.ok()) {
        return Annotate(s, absl::StrCat("copying tensor '", t.name, "'"));
      }
    } else {
      absl::StatusOr<std::vector<LowRankUpdate>> updates = LoadUpdates(merged->second);
      if (!updates.ok()) return updates.status();
      state.records.push_back({&merged->second, {}});
      if (absl::Status s = WriteMergedTensor(merged->second, *updates, source, out, tracker, pace, context, &state.records.back().figures);
          !s.ok()) {
        return s;
      }
    }
    position = t.data_offset + t.size_bytes;
    tracker.AddTensors(1);
  }
  if (absl::Status s = CopyByteRange(source, position, source.size_bytes() - position, out, tracker, pace, context); !s.ok()) return s;
  return header_bytes;
}

ordered_json FiniteOrNull(double v) { return std::isfinite(v) ? ordered_json(v) : ordered_json(nullptr); }

// The weight a merged tensor stands for: a quantized group's "<module>.weight", else the tensor.
const std::string& WeightName(const MergeTensor& t) { return t.reader != nullptr ? t.reader->name() : t.base->name; }

bool IsQuantizedType(const MergeTensor& t) {
  return t.reader != nullptr || (t.base->ggml_type && t.type != "F32" && t.type != "F16" && t.type != "BF16");
}

void WarnPolicies(const LoraMergePlan& plan, JobContext& context) {
  std::map<std::string, std::pair<size_t, std::string>> by_type;  // type -> count, first tensor
  for (const auto& [index, t] : plan.merged) {
    if (!IsQuantizedType(t)) continue;
    auto [it, created] = by_type.try_emplace(t.type, 0, WeightName(t));
    ++it->second.first;
  }
  for (const auto& [type, entry] : by_type) {
    context.Warn("LORA_REQUANTIZED",
                 absl::StrCat(entry.first, " merged weight(s) of type ", type, " are dequantized, merged in F32 and quantized again as ",
                              type, " (policy requantize); the result's snr_db per tensor is the error that adds"),
                 entry.second);
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
  uint32_t requantized = 0;
  for (const MergedRecord& r : records) {
    if (!IsQuantizedType(*r.tensor)) continue;
    ++requantized;
    min_snr = std::min(min_snr, r.figures.written.snr_db());
  }
  f->set_tensors_requantized(requantized);
  f->set_min_snr_db(min_snr);
  std::vector<const MergedRecord*> by_update;
  for (const MergedRecord& r : records) by_update.push_back(&r);
  std::stable_sort(by_update.begin(), by_update.end(), [](const MergedRecord* a, const MergedRecord* b) {
    return a->figures.relative_update > b->figures.relative_update;
  });
  for (size_t i = 0; i < by_update.size() && i < kLargestUpdatesReported; ++i) {
    v1::MergedTensor* m = f->add_largest_updates();
    m->set_name(WeightName(*by_update[i]->tensor));
    m->set_type(by_update[i]->tensor->type);
    m->set_adapters(by_update[i]->tensor->updates.size());
    m->set_relative_update(by_update[i]->figures.relative_update);
    m->set_snr_db(by_update[i]->figures.written.snr_db());
  }
}

ordered_json ManifestBody(const LoraMergePlan& plan, const std::vector<MergedRecord>& records) {
  ordered_json merged = ordered_json::array();
  for (const MergedRecord& r : records) {
    ordered_json modules = ordered_json::array();
    for (const MergeUpdate& u : r.tensor->updates) modules.push_back({{"adapter", u.adapter->uri}, {"module", u.target->module->key}});
    merged.push_back({{"name", WeightName(*r.tensor)},
                      {"type", r.tensor->type},
                      {"modules", std::move(modules)},
                      {"relative_update", FiniteOrNull(r.figures.relative_update)},
                      {"snr_db", FiniteOrNull(r.figures.written.snr_db())},
                      {"max_abs_error", r.figures.written.max_abs_error()}});
  }
  ordered_json skipped = ordered_json::array();
  for (const SkippedKey& k : plan.skipped) {
    skipped.push_back({{"adapter", k.adapter->uri}, {"key", k.mismatch.key}, {"problem", k.mismatch.problem}, {"closest", k.mismatch.closest}});
  }
  return {{"adapters", AdaptersJson(plan)}, {"merged", std::move(merged)}, {"skipped", std::move(skipped)}};
}

}  // namespace

absl::StatusOr<uint64_t> PreflightLoraMergeJob(const v1::LoraMergeSpec& spec, const StorageRouter& router) {
  absl::StatusOr<std::unique_ptr<LoraMergePlan>> plan = MakeLoraMergePlan(spec, router);
  if (!plan.ok()) return plan.status();
  if (absl::Status s = CheckOutputShape(**plan, spec.output()); !s.ok()) return s;
  absl::StatusOr<Location> output = router.Resolve(spec.output());
  if (!output.ok()) return WithReason(output.status(), ReasonOf(output.status()), {{"field", "lora_merge.output"}});
  if (absl::Status s = CheckNoOverlap(**plan, output->uri); !s.ok()) return s;
  if ((*plan)->gguf()) {
    for (const std::string& uri : OutputUris(**plan, output->uri, nullptr)) {
      if (absl::Status s = OutputFile::CheckVacant(router, uri, spec.overwrite(), "lora_merge.output"); !s.ok()) return s;
    }
  } else if (absl::Status s = CheckOutputVacant(router, spec.output(), spec.overwrite(), "lora_merge.output"); !s.ok()) {
    return s;
  }
  uint64_t largest_adapter = 0;
  for (const auto& [index, t] : (*plan)->merged) {
    uint64_t bytes = 0;
    for (const MergeUpdate& u : t.updates) {
      bytes += 4 * (ElementCount(u.target->module->up->shape).value_or(0) + ElementCount(u.target->module->down->shape).value_or(0));
    }
    largest_adapter = std::max(largest_adapter, 2 * bytes);  // read, then held transposed or permuted
  }
  return kMergeJobBaseMemoryBytes + largest_adapter;
}

absl::StatusOr<v1::JobResult> RunLoraMergeJob(const JobRun& run, JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  const v1::LoraMergeSpec& spec = run.spec.lora_merge();
  absl::StatusOr<std::unique_ptr<LoraMergePlan>> made = MakeLoraMergePlan(spec, *run.router);
  if (!made.ok()) return made.status();
  const LoraMergePlan& plan = **made;
  if (absl::Status s = CheckOutputShape(plan, spec.output()); !s.ok()) return s;

  // Output rules: a directory for safetensors, one file (or its split parts) for GGUF.
  std::optional<OutputLocation> directory;
  std::optional<OutputFile> single;
  std::vector<std::string> uris;
  if (plan.gguf()) {
    absl::StatusOr<OutputFile> file = OutputFile::Prepare(*run.router, spec.output(), spec.overwrite(), run.attempt, "lora_merge.output");
    if (!file.ok()) return file.status();
    single = *std::move(file);
    if (absl::Status s = CheckNoOverlap(plan, single->uri()); !s.ok()) return s;
    uris = OutputUris(plan, single->uri(), nullptr);
    // The parts of a split base obey the same rules as the named file (the manifest's name).
    for (size_t i = 0; uris.size() > 1 && i < uris.size(); ++i) {
      absl::StatusOr<OutputFile> part = OutputFile::Prepare(*run.router, uris[i], spec.overwrite(), run.attempt, "lora_merge.output");
      if (!part.ok()) return part.status();
    }
  } else {
    absl::StatusOr<Location> resolved = run.router->Resolve(spec.output());
    if (!resolved.ok()) return WithReason(resolved.status(), ReasonOf(resolved.status()), {{"field", "lora_merge.output"}});
    if (absl::Status s = CheckNoOverlap(plan, resolved->uri); !s.ok()) return s;
    absl::StatusOr<OutputLocation> location =
        OutputLocation::Prepare(*run.router, spec.output(), spec.overwrite(), run.attempt, "lora_merge.output");
    if (!location.ok()) return location.status();
    directory = *std::move(location);
    uris = OutputUris(plan, directory->uri(), &*directory);
  }
  ObjectStore& store = directory ? directory->store() : single->store();

  ProgressTracker tracker(context, plan.base.file_bytes, plan.base.tensors.size());
  tracker.SetPhase("plan");
  for (const auto& a : plan.adapters) {
    context.Log(absl::StrFormat("adapter '%s': %s keys, %d module(s), config from %s, strength %g, %d module(s) matched", a->uri,
                                a->adapter.style, a->adapter.modules.size(), a->adapter.config_source, a->strength, a->match.targets.size()));
  }
  context.Log(absl::StrFormat("merging %d adapter(s) into %d of %d tensors of '%s' (%s, %d file(s)); output '%s'", plan.adapters.size(),
                              plan.merged.size(), plan.base.tensors.size(), plan.base.uri, plan.base.format, plan.base.files.size(),
                              directory ? directory->uri() : single->uri()));
  for (const SkippedKey& k : plan.skipped) {
    context.Warn("LORA_KEY_SKIPPED",
                 absl::StrCat("adapter '", k.adapter->uri, "' key '", k.mismatch.key, "' is left out: ", DescribeMismatch(k.mismatch)),
                 k.mismatch.key);
  }
  WarnPolicies(plan, context);

  std::vector<v1::Artifact> artifacts;
  std::vector<std::string> committed_names;  // directory output
  auto fail = [&](absl::Status status) -> absl::Status {
    if (directory) {
      directory->Discard(committed_names);
    } else {
      for (const v1::Artifact& a : artifacts) store.Delete(a.uri()).IgnoreError();
    }
    return status;
  };
  RateLimiter pace(run.io_bytes_per_second);
  MergeState state;
  state.records.reserve(plan.merged.size());  // records are pointed to while they are filled
  const std::string role = plan.base.files.size() == 1 ? "model" : "shard";
  for (size_t i = 0; i < plan.base.files.size(); ++i) {
    tracker.SetPhase("execute");
    absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = store.OpenForWrite(uris[i]);
    if (!writer.ok()) return fail(writer.status());
    PipelinedWriter out(*std::move(writer), kQueuedWriteBytes, PipelinedWriter::ReadBackCheck::kCompare);
    absl::StatusOr<uint64_t> header_bytes = WriteFile(plan, i, out, tracker, pace, context, state);
    if (!header_bytes.ok()) {
      out.Abort();
      return fail(header_bytes.status());
    }
    const ModelFile& base_file = plan.base.files[i];
    absl::StatusOr<v1::Artifact> artifact = VerifyAndCommit(
        out, store, uris[i], base_file.object->size_bytes(), role,
        [&](const RandomAccessObject& written) { return CheckMirrored(written, base_file, *header_bytes); }, tracker, context);
    if (!artifact.ok()) {
      out.Abort();
      return fail(artifact.status());
    }
    artifacts.push_back(*artifact);
    committed_names.push_back(std::string(BaseName(uris[i])));
  }
  if (directory) {
    // The index (its weight map is unchanged) and config.json, copied as they are.
    std::vector<std::pair<std::string, std::string>> small;  // source uri, role
    if (!plan.base.index_uri.empty()) small.emplace_back(plan.base.index_uri, "index");
    if (plan.config) small.emplace_back(JoinUri(ParentUri(plan.base.files.front().uri), "config.json"), "config");
    absl::StatusOr<Location> base_location = run.router->Resolve(plan.base.uri);
    if (!base_location.ok()) return fail(base_location.status());
    for (const auto& [uri, small_role] : small) {
      absl::StatusOr<std::string> text = ReadSmallObject(*base_location->store, uri);
      if (!text.ok()) return fail(text.status());
      const std::string name(BaseName(uri));
      absl::StatusOr<v1::Artifact> artifact = WriteSmallObject(store, directory->UriOf(name), *text, small_role);
      if (!artifact.ok()) return fail(artifact.status());
      artifacts.push_back(*artifact);
      committed_names.push_back(name);
    }
  }

  v1::JobResult result;
  for (const v1::Artifact& a : artifacts) *result.add_artifacts() = a;
  v1::JobFigures* figures = result.mutable_figures();
  FillFigures(plan, state.records, figures->mutable_lora_merge());
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
  absl::StatusOr<v1::Artifact> manifest_artifact =
      directory ? directory->WriteManifest(std::move(manifest), artifacts)
                : WriteManifestTo(store, single->manifest_uri(), std::move(manifest), artifacts);
  if (!manifest_artifact.ok()) return fail(manifest_artifact.status());
  if (directory) {
    std::set<std::string> kept(committed_names.begin(), committed_names.end());
    kept.insert(std::string(kManifestName));
    directory->RemoveReplaced(kept).IgnoreError();
  }
  uint64_t written = manifest_artifact->size_bytes();
  for (const v1::Artifact& a : artifacts) written += a.size_bytes();
  figures->set_bytes_written(written);
  *result.add_artifacts() = *manifest_artifact;
  return result;
}

}  // namespace modelsmith
