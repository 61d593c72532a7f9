#include "workers/jobs/convert/convert_job.h"

#include <chrono>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "workers/common/error.h"
#include "workers/formats/tensor_reader.h"
#include "workers/jobs/convert/convert_gguf_job.h"
#include "workers/jobs/convert/convert_plan.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/shard/shard_plan.h"
#include "workers/jobs/core/publication.h"
#include "workers/pool/parallel_for.h"
#include "workers/quant/cast.h"
#include "workers/quant/quantize_rows.h"
#include "workers/storage/checksum.h"
#include "workers/storage/pipelined_writer.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

// Elements per chunk of a tensor that is read, cast or compared in memory.
constexpr uint64_t kChunkElements = 4 << 20;
constexpr uint64_t kQueuedWriteBytes = 32 << 20;
// Unchanged bytes are copied in pieces of this size, polling for a stop between them.
constexpr uint64_t kCopyPieceBytes = 64 << 20;
// Chunks in flight (the one being made, two queued, one being compared) of at most 8-byte
// elements, plus bookkeeping.
constexpr uint64_t kConvertJobBaseMemoryBytes = 4 * kChunkElements * 8 + (32 << 20);

uint64_t ElementsOf(const TensorInfo& t) { return ElementCount(t.shape).value_or(0); }

// Casts `count` elements of `from` into `to` on the compute threads in parts; counts are merged
// in part order.
void CastParallel(DType from, DType to, const std::byte* in, uint64_t count, std::byte* out, CastCounts* counts) {
  const uint64_t in_width = DTypeBits(from) / 8;
  const uint64_t out_width = DTypeBits(to) / 8;
  constexpr uint64_t kPart = 256 << 10;
  const size_t parts = static_cast<size_t>((count + kPart - 1) / kPart);
  std::vector<CastCounts> part_counts(parts);
  ParallelFor(parts, ComputeThreads(), [&](size_t part, size_t) {
    const uint64_t begin = part * kPart;
    const uint64_t n = std::min(kPart, count - begin);
    CastElements(from, to, in + begin * in_width, n, out + begin * out_width, &part_counts[part]);
  });
  for (const CastCounts& p : part_counts) counts->Add(p);
}

// Output rows [first_row, first_row + rows) of a GGUF tensor read row by row: each from its
// source row (reordered when row_source says so), decoded by the ggml decoder to F32, then cast.
absl::Status ProduceRows(const ConvertTensor& c, const RandomAccessObject& file, uint64_t first_row, uint64_t rows,
                         std::vector<std::byte>& scratch, std::byte* out, CastCounts* counts) {
  const GgmlType type = static_cast<GgmlType>(*c.source->ggml_type);
  const uint64_t row_elements = c.source->shape.empty() ? 1 : c.source->shape.back();
  const uint64_t row_bytes = *GgmlRowBytes(type, row_elements);
  scratch.resize(rows * row_bytes);
  if (c.row_source.empty()) {
    if (absl::Status s = file.ReadAt(c.source->data_offset + first_row * row_bytes, rows * row_bytes, scratch.data());
        !s.ok())
      return s;
  } else {
    for (uint64_t r = 0; r < rows; ++r) {
      const uint64_t from = c.row_source[first_row + r];
      if (absl::Status s =
              file.ReadAt(c.source->data_offset + from * row_bytes, row_bytes, scratch.data() + r * row_bytes);
          !s.ok()) {
        return s;
      }
    }
  }
  std::vector<float> values(rows * row_elements);
  DecodeRows(type, reinterpret_cast<const uint8_t*>(scratch.data()), rows, row_elements, values.data());
  if (c.add != 0.0f) {
    for (float& v : values) v += c.add;
  }
  CastParallel(DType::kF32, c.dtype, reinterpret_cast<const std::byte*>(values.data()), values.size(), out, counts);
  return absl::OkStatus();
}

// Output elements [first, first + count) of `c`: the source's logical bytes, cast when the dtype
// changes. A strided source is read whole (first 0, count all); a row-wise one in whole rows.
absl::Status Produce(const ConvertTensor& c, const RandomAccessObject& file, uint64_t first, uint64_t count,
                     std::vector<std::byte>& scratch, std::byte* out, CastCounts* counts) {
  if (c.row_wise()) {
    const uint64_t row_elements = std::max<uint64_t>(1, c.source->shape.empty() ? 1 : c.source->shape.back());
    return ProduceRows(c, file, first / row_elements, count / row_elements, scratch, out, counts);
  }
  const uint64_t in_width = DTypeBits(c.source->dtype) / 8;
  if (!c.cast()) return ReadTensorBytes(file, *c.source, first * in_width, count * in_width, out);
  scratch.resize(count * in_width);
  if (absl::Status s = ReadTensorBytes(file, *c.source, first * in_width, count * in_width, scratch.data()); !s.ok())
    return s;
  if (c.add != 0.0f) {  // through F32: the offset, then the target dtype
    std::vector<float> values(count);
    CastParallel(c.source->dtype, DType::kF32, scratch.data(), count, reinterpret_cast<std::byte*>(values.data()),
                 counts);
    for (float& v : values) v += c.add;
    CastParallel(DType::kF32, c.dtype, reinterpret_cast<const std::byte*>(values.data()), count, out, counts);
    return absl::OkStatus();
  }
  CastParallel(c.source->dtype, c.dtype, scratch.data(), count, out, counts);
  return absl::OkStatus();
}

// The chunks a tensor is produced in: all of it for a strided source.
uint64_t ChunkElements(const ConvertTensor& c) {
  if (c.row_wise()) {
    const uint64_t row = std::max<uint64_t>(1, c.source->shape.empty() ? 1 : c.source->shape.back());
    return std::max<uint64_t>(1, kChunkElements / row) * row;
  }
  return c.source->strides.empty() ? kChunkElements : std::max<uint64_t>(1, ElementsOf(*c.source));
}

// The written file against its plan: header and tensor table; then, unless the writer already
// compared every byte it wrote with the file (`data_compared`), every tensor's bytes against its
// source read and cast again (a store that reads back only after commit: S3).
absl::Status CheckWritten(const RandomAccessObject& written, const ConvertFile& plan, const ModelView& model,
                          const JobContext& context, bool data_compared) {
  absl::StatusOr<SafetensorsHeader> header = ReadSafetensorsHeader(written);
  if (!header.ok()) return Annotate(header.status(), absl::StrCat("verifying '", plan.name, "'"));
  auto mismatch = [&](absl::string_view what) {
    return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                     absl::StrCat("'", plan.name, "' as written does not match its source: ", what),
                     {{"file", plan.name}});
  };
  if (header->tensors.size() != plan.entries.size()) return mismatch("tensor count");
  std::vector<std::byte> expected, got, scratch;
  for (size_t i = 0; i < plan.entries.size(); ++i) {
    const TensorInfo& w = header->tensors[i];
    const ConvertTensor& c = *plan.tensors[i];
    if (w.name != c.name || w.dtype != c.dtype || w.shape != c.shape() || w.size_bytes != c.size_bytes) {
      return mismatch(absl::StrCat("the table entry of tensor '", c.name, "'"));
    }
    if (data_compared) continue;
    const RandomAccessObject& source = *model.files[c.source->file_index].object;
    const uint64_t elements = ElementCount(c.shape()).value_or(0);
    const uint64_t width = DTypeBits(c.dtype) / 8;
    const uint64_t step = ChunkElements(c);
    for (uint64_t first = 0; first < elements; first += step) {
      if (absl::Status s = StopStatus(context); !s.ok()) return s;
      const uint64_t count = std::min(step, elements - first);
      expected.resize(count * width);
      got.resize(count * width);
      CastCounts ignored;
      if (absl::Status s = Produce(c, source, first, count, scratch, expected.data(), &ignored); !s.ok()) return s;
      if (absl::Status s = written.ReadAt(w.data_offset + first * width, count * width, got.data()); !s.ok()) return s;
      if (std::memcmp(expected.data(), got.data(), expected.size()) != 0) {
        return mismatch(absl::StrCat("the bytes of tensor '", c.name, "'"));
      }
    }
  }
  return absl::OkStatus();
}

// Streams one tensor into `out`; adds its cast counts to `counts`.
absl::Status WriteTensor(const ConvertTensor& c, const RandomAccessObject& file, PipelinedWriter& out,
                         ProgressTracker& tracker, RateLimiter& pace, const JobContext& context, CastCounts* counts) {
  if (!c.cast() && c.source->strides.empty() && !c.row_wise()) {
    // Unchanged bytes: a transfer, which the writer hashes, writes and compares.
    for (uint64_t done = 0; done < c.source->size_bytes;) {
      if (absl::Status s = StopStatus(context); !s.ok()) return s;
      const uint64_t piece = pace.PieceBytes(std::min(kCopyPieceBytes, c.source->size_bytes - done));
      if (absl::Status s = out.AppendFrom(file, c.source->data_offset + done, piece); !s.ok()) {
        return Annotate(s, absl::StrCat("copying tensor '", c.source->name, "'"));
      }
      done += piece;
      tracker.AddBytes(piece);
      pace.Account(piece, [&] { return context.stop_requested(); });
    }
    return absl::OkStatus();
  }
  const uint64_t elements = ElementCount(c.shape()).value_or(0);
  const uint64_t out_width = DTypeBits(c.dtype) / 8;
  uint64_t step = ChunkElements(c);
  // Under an I/O limit, chunks of about a tenth of a second's bytes (whole rows where the cast
  // goes row by row), so that progress and the pacing move smoothly through a large tensor.
  if (const uint64_t source_width = c.source->size_bytes / std::max<uint64_t>(1, ElementsOf(*c.source));
      source_width > 0 && c.source->strides.empty()) {
    const uint64_t row = c.row_wise() ? std::max<uint64_t>(1, c.source->shape.empty() ? 1 : c.source->shape.back()) : 1;
    const uint64_t paced = pace.PieceBytes(step * source_width) / source_width;
    step = std::min(step, std::max<uint64_t>(row, paced / row * row));
  }
  std::vector<std::byte> scratch;
  for (uint64_t first = 0; first < elements; first += step) {
    if (absl::Status s = StopStatus(context); !s.ok()) return s;
    const uint64_t count = std::min(step, elements - first);
    std::shared_ptr<std::byte[]> chunk = out.TakeBuffer(count * out_width);
    if (absl::Status s = Produce(c, file, first, count, scratch, chunk.get(), counts); !s.ok()) {
      return Annotate(s, absl::StrCat("reading tensor '", c.source->name, "'"));
    }
    if (absl::Status s = out.AppendShared(std::move(chunk), count * out_width); !s.ok()) return s;
    const uint64_t consumed =
        c.source->size_bytes / std::max<uint64_t>(1, ElementsOf(*c.source)) * count;  // source bytes
    tracker.AddBytes(consumed);
    pace.Account(consumed, [&] { return context.stop_requested(); });
  }
  return absl::OkStatus();
}

std::string IndexJson(const ConvertPlan& plan) {
  std::vector<std::pair<std::string, std::string>> weight_map;
  for (const ConvertFile& f : plan.files) {
    for (const SafetensorsEntry& e : f.entries) weight_map.emplace_back(e.name, f.name);
  }
  return HfIndexJson(plan.model.index_metadata, plan.output_tensor_bytes, weight_map);
}

}  // namespace

struct ConvertSafetensorsPlan {
  ConvertPlan plan;
};

absl::StatusOr<ConvertOptions> ConvertJob::Parse(const v1::JobSpec& spec) {
  return ParseConvertOptions(spec.convert());
}

absl::StatusOr<ConvertJobPlan> ConvertJob::MakePlan(const ConvertOptions& options, const PlanEnv& env) {
  const v1::ConvertSpec& spec = options.spec;
  ConvertJobPlan job_plan;
  if (options.gguf) {
    absl::StatusOr<std::shared_ptr<ConvertGgufPlan>> gguf = MakeConvertGgufPlan(spec, env);
    if (!gguf.ok()) return gguf.status();
    job_plan.gguf = *std::move(gguf);
    job_plan.estimated_peak_bytes = kConvertGgufJobMemoryBytes;
    return job_plan;
  }
  absl::StatusOr<ConvertPlan> plan = MakeConvertPlan(options, env.router);
  if (!plan.ok()) return plan.status();
  if (absl::Status s = Publication::CheckApartFromInput(plan->model, env.router, spec.output(), "convert.output");
      !s.ok()) {
    return s;
  }
  const bool replace = spec.overwrite() || env.attempt > 1;
  if (absl::Status s = Publication::CheckDirectoryVacant(env.router, spec.output(), replace, "convert.output");
      !s.ok()) {
    return s;
  }
  uint64_t largest_strided = 0;
  for (const ConvertTensor& c : plan->tensors) {
    if (!c.source->strides.empty()) largest_strided = std::max(largest_strided, c.source->size_bytes + c.size_bytes);
  }
  job_plan.estimated_peak_bytes = kConvertJobBaseMemoryBytes + 2 * largest_strided;
  job_plan.safetensors = std::make_shared<ConvertSafetensorsPlan>(ConvertSafetensorsPlan{*std::move(plan)});
  return job_plan;
}

absl::StatusOr<v1::JobResult> ConvertJob::Produce(ConvertJobPlan& job_plan, const JobRun& run, JobContext& context) {
  if (job_plan.gguf != nullptr) return ProduceConvertGguf(*job_plan.gguf, run, context);
  const auto start = std::chrono::steady_clock::now();
  const v1::ConvertSpec& spec = run.spec.convert();
  ConvertPlan* plan = &job_plan.safetensors->plan;
  absl::StatusOr<Publication> output =
      Publication::ForDirectory(*run.router, spec.output(), spec.overwrite(), run.attempt, "convert.output");
  if (!output.ok()) return output.status();
  const ModelView& model = plan->model;

  ProgressTracker tracker(context, model.tensor_bytes, plan->tensors.size());
  tracker.SetPhase("plan");
  context.Log(absl::StrFormat("converting '%s' (%s, %d tensors, %d bytes) to %d safetensors file(s) in '%s'", model.uri,
                              model.format, plan->tensors.size(), model.tensor_bytes, plan->files.size(),
                              output->uri()));
  for (const TensorAlias& a : model.aliases) {
    context.Warn("TENSOR_ALIAS",
                 absl::StrCat("'", a.name, "' is the same tensor as '", a.target, "' (tied); it is written once, as '",
                              a.target, "'"),
                 a.name);
  }
  for (const std::string& dropped : plan->dropped) {
    context.Warn("TENSOR_DROPPED",
                 absl::StrCat("GGUF tensor '", dropped, "' has no Hugging Face counterpart; it is left out"), dropped);
  }
  for (const std::string& skipped : model.skipped_entries) {
    context.Warn("ENTRY_SKIPPED", absl::StrCat("state-dict entry '", skipped, "' is not a tensor; it is left out"),
                 skipped);
  }

  RateLimiter pace(run.io_bytes_per_second);
  ordered_json casts = ordered_json::array();
  CastCounts total;
  uint32_t tensors_cast = 0;
  uint64_t bytes_read = 0;
  for (const ConvertFile& file : plan->files) {
    tracker.SetPhase("execute");
    const std::string uri = output->UriOf(file.name);
    absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = output->OpenWriter(uri);
    if (!writer.ok()) return writer.status();
    PipelinedWriter out(*std::move(writer), kQueuedWriteBytes, PipelinedWriter::ReadBackCheck::kCompare);
    if (absl::Status s = out.Append({reinterpret_cast<const std::byte*>(file.header.data()), file.header.size()});
        !s.ok()) {
      out.Abort();
      return s;
    }
    for (const ConvertTensor* c : file.tensors) {
      CastCounts counts;
      const RandomAccessObject& source = *model.files[c->source->file_index].object;
      if (absl::Status s = WriteTensor(*c, source, out, tracker, pace, context, &counts); !s.ok()) {
        out.Abort();
        return s;
      }
      bytes_read += c->source->size_bytes;
      tracker.AddTensors(1);
      if (c->dtype == c->source->dtype) continue;
      ++tensors_cast;
      total.Add(counts);
      casts.push_back({{"tensor", c->name},
                       {"from", DTypeName(c->source->dtype)},
                       {"to", DTypeName(c->dtype)},
                       {"overflowed", counts.overflowed},
                       {"saturated", counts.saturated},
                       {"nan", counts.nan}});
      if (counts.overflowed > 0) {
        context.Warn("CAST_OVERFLOW",
                     absl::StrCat("tensor '", c->name, "': ", counts.overflowed, " finite values are too large for ",
                                  DTypeName(c->dtype), " and became Inf"),
                     c->name);
      }
      if (counts.saturated > 0) {
        context.Warn("CAST_SATURATED",
                     absl::StrCat("tensor '", c->name, "': ", counts.saturated,
                                  " values were clamped to the largest finite ", DTypeName(c->dtype)),
                     c->name);
      }
    }
    // Every range compared as it was written spares re-reading the tensors; the check may also
    // run after `out` is gone (a store that reads only committed objects), and then compares.
    auto live_writer = std::make_shared<const PipelinedWriter*>(&out);
    absl::StatusOr<v1::Artifact> artifact = output->Stage(
        out, file.file_bytes, plan->files.size() == 1 ? "model" : "shard",
        [&file, &model, &context, live_writer](const RandomAccessObject& written) {
          const bool compared = *live_writer != nullptr && (*live_writer)->compared_bytes() == file.file_bytes;
          return CheckWritten(written, file, model, context, compared);
        },
        tracker, context);
    *live_writer = nullptr;
    if (!artifact.ok()) return artifact.status();
  }
  if (plan->config) {
    absl::StatusOr<v1::Artifact> config =
        output->WriteSmall(output->UriOf("config.json"), plan->config->dump(2) + "\n", "config");
    if (!config.ok()) return config.status();
  }
  for (const auto& [name, content] : plan->tokenizer_files) {
    absl::StatusOr<v1::Artifact> side = output->WriteSmall(output->UriOf(name), content, "config");
    if (!side.ok()) return side.status();
  }
  if (!plan->index_name.empty()) {
    absl::StatusOr<v1::Artifact> index = output->WriteSmall(output->UriOf(plan->index_name), IndexJson(*plan), "index");
    if (!index.ok()) return index.status();
  }

  v1::JobResult result;
  v1::JobFigures* figures = result.mutable_figures();
  v1::ConvertFigures* convert = figures->mutable_convert();
  convert->set_files(plan->files.size());
  convert->set_tensors_written(plan->tensors.size());
  convert->set_tensors_cast(tensors_cast);
  convert->set_aliases_dropped(model.aliases.size());
  convert->set_tensors_renamed(plan->renamed.size());
  convert->set_entries_skipped(model.skipped_entries.size());
  convert->set_overflowed_values(total.overflowed);
  convert->set_saturated_values(total.saturated);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  figures->set_duration_seconds(seconds);
  figures->set_bytes_read(bytes_read);
  figures->set_tensors(plan->tensors.size());
  figures->set_throughput_bytes_per_second(seconds > 0 ? bytes_read / seconds : 0);
  tracker.Flush();
  figures->set_peak_resident_bytes(tracker.peak_resident_bytes());

  ordered_json manifest = ManifestHeader(run, "convert", model);
  ordered_json aliases = ordered_json::array();
  for (const TensorAlias& a : model.aliases) aliases.push_back({{"name", a.name}, {"written_as", a.target}});
  ordered_json renamed = ordered_json::array();
  for (const auto& [from, to] : plan->renamed) renamed.push_back({{"from", from}, {"to", to}});
  manifest["convert"] = {{"aliases", std::move(aliases)},
                         {"skipped_entries", model.skipped_entries},
                         {"renamed", std::move(renamed)},
                         {"casts", std::move(casts)}};
  manifest["figures"] = MessageJson(*figures);
  if (absl::Status s = output->Publish(std::move(manifest), result, tracker, context); !s.ok()) return s;
  return result;
}

}  // namespace modelsmith
