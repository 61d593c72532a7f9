#include "workers/jobs/convert/convert_gguf_job.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"
#include "workers/formats/tensor_reader.h"
#include "workers/jobs/convert/hf_to_gguf.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/quantize/quantize_plan.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/core/publication.h"
#include "workers/pool/parallel_for.h"
#include "workers/quant/cast.h"
#include "workers/quant/quantize_rows.h"
#include "workers/storage/pipelined_writer.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

constexpr uint64_t kChunkElements = 4 << 20;
constexpr uint64_t kPartElements = 256 << 10;
constexpr uint64_t kQueuedWriteBytes = 32 << 20;

// The --dtype of a GGUF target: nullopt for "auto".
absl::StatusOr<std::optional<GgmlType>> TargetType(const v1::ConvertSpec& spec) {
  if (spec.dtype().empty()) return std::optional<GgmlType>();
  std::string name = absl::AsciiStrToUpper(spec.dtype());
  if (name == "FP16" || name == "FLOAT16") name = "F16";
  if (name == "FP32" || name == "FLOAT32") name = "F32";
  if (name == "BFLOAT16") name = "BF16";
  std::optional<GgmlTypeTraits> traits = GgmlTraitsByName(name);
  if (!traits || !CanEncode(traits->type)) {
    return FieldError(
        "INVALID_DTYPE", "convert.dtype",
        absl::StrCat("'", spec.dtype(), "' is not a type GGUF output takes: f32, f16, bf16, Q8_0, Q4_0, Q4_K, ..."));
  }
  return std::optional<GgmlType>(traits->type);
}

struct Plan {
  ModelView model;
  HfToGguf mapping;
  std::vector<GgufTensor> layout;  // parallel to mapping.tensors
  std::string header;
  uint64_t file_bytes = 0;
};

absl::StatusOr<Plan> MakePlan(const v1::ConvertSpec& spec, const StorageRouter& router) {
  absl::StatusOr<std::optional<GgmlType>> type = TargetType(spec);
  if (!type.ok()) return type.status();
  absl::StatusOr<Location> input = router.Resolve(spec.input());
  if (!input.ok()) return WithReason(input.status(), ReasonOf(input.status()), {{"field", "convert.input"}});
  absl::StatusOr<ModelView> model = OpenModel(*input);
  if (!model.ok()) return WithReason(model.status(), ReasonOf(model.status()), {{"field", "convert.input"}});
  if (model->gguf)
    return FieldError("ALREADY_GGUF", "convert.input", absl::StrCat("'", model->uri, "' is GGUF already"));
  Plan plan;
  plan.model = *std::move(model);
  absl::StatusOr<HfFiles> files = ReadHfFiles(*input->store, plan.model);
  if (!files.ok()) return files.status();
  GgmlType target = GgmlType::kF16;
  if (*type) {
    target = **type;
  } else {
    for (const TensorInfo& t : plan.model.tensors) {
      if (t.shape.size() == 2) {
        target = t.dtype == DType::kBF16 ? GgmlType::kBF16 : GgmlType::kF16;
        break;
      }
    }
  }
  const std::string name = std::string(BaseName(ParentUri(plan.model.files.front().uri)));
  absl::StatusOr<HfToGguf> mapping = MapHfToGguf(plan.model, *files, target, name, spec.tokenizer_pre());
  if (!mapping.ok()) return mapping.status();
  plan.mapping = *std::move(mapping);
  for (const GgufOutputTensor& t : plan.mapping.tensors) {
    if (t.source == nullptr) {  // computed: F32 values
      GgufTensor g;
      g.name = t.name;
      g.ne = {t.computed.size()};
      g.type = GgmlType::kF32;
      g.size_bytes = t.computed.size() * sizeof(float);
      plan.layout.push_back(std::move(g));
      continue;
    }
    if (!IsCastableFloat(t.source->dtype)) {
      return MakeError(
          absl::StatusCode::kInvalidArgument, "UNSUPPORTED_TYPE",
          absl::StrCat("tensor '", t.source->name, "' is ", DTypeName(t.source->dtype), ", not a float type"),
          {{"tensor", t.source->name}});
    }
    GgufTensor g;
    g.name = t.name;
    g.ne = t.source->shape.empty() ? std::vector<uint64_t>{1}
                                   : std::vector<uint64_t>(t.source->shape.rbegin(), t.source->shape.rend());
    g.type = t.type;
    const uint64_t row = g.ne[0];
    g.size_bytes = (*ElementCount(t.source->shape) / std::max<uint64_t>(1, row)) * *GgmlRowBytes(t.type, row);
    if (!t.stacked.empty()) {  // experts: one more, outermost dimension
      g.ne.push_back(t.stacked.size());
      g.size_bytes *= t.stacked.size();
    }
    plan.layout.push_back(std::move(g));
  }
  plan.mapping.kvs.push_back(GgufKv::U32("general.quantization_version", kGgmlQuantizationVersion));
  plan.mapping.kvs.push_back(GgufKv::U32("general.file_type", LlamaFileType(target)));
  plan.header = SerializeGgufHeader(plan.mapping.kvs, plan.layout);
  plan.file_bytes = plan.header.size();
  for (const GgufTensor& g : plan.layout)
    plan.file_bytes += g.size_bytes + GgufPadding(g.size_bytes, kGgufDefaultAlignment);
  return plan;
}

// The GGUF type that holds a source dtype's values as they are, if any.
std::optional<GgmlType> SameType(DType dtype) {
  switch (dtype) {
    case DType::kF32: return GgmlType::kF32;
    case DType::kF16: return GgmlType::kF16;
    case DType::kBF16: return GgmlType::kBF16;
    default: return std::nullopt;
  }
}

// The source bytes of rows [first, first + count) of `t` in GGUF order, into `raw`. A strided
// source is gathered whole into `whole` once; `span` is scratch for reordered rows.
absl::Status GatherRows(const GgufOutputTensor& t, const RandomAccessObject& file, uint64_t row_elements,
                        uint64_t first, uint64_t count, std::vector<std::byte>& whole, std::vector<std::byte>& span,
                        std::byte* raw) {
  const TensorInfo& s = *t.source;
  const uint64_t width = DTypeBits(s.dtype) / 8;
  const uint64_t row_bytes = row_elements * width;
  if (!s.strides.empty() && whole.empty()) {
    whole.resize(s.size_bytes);
    if (absl::Status st = ReadTensorBytes(file, s, 0, s.size_bytes, whole.data()); !st.ok()) return st;
  }
  auto read = [&](uint64_t source_row, uint64_t rows, std::byte* dst) -> absl::Status {
    if (!whole.empty()) {
      std::memcpy(dst, whole.data() + source_row * row_bytes, rows * row_bytes);
      return absl::OkStatus();
    }
    return file.ReadAt(s.data_offset + source_row * row_bytes, rows * row_bytes, dst);
  };
  if (t.row_source.empty()) return read(first, count, raw);
  // Reordered rows come from within their own head, so the chunk's sources span about as many
  // rows as the chunk: one read of that span, then the rows are picked in memory (a read per
  // row cost a system call per 4 KiB).
  const auto [low, high] = std::minmax_element(t.row_source.begin() + first, t.row_source.begin() + first + count);
  if (whole.empty() && *high - *low + 1 <= 2 * count) {
    span.resize((*high - *low + 1) * row_bytes);
    if (absl::Status st = read(*low, *high - *low + 1, span.data()); !st.ok()) return st;
    for (uint64_t r = 0; r < count; ++r) {
      std::memcpy(raw + r * row_bytes, span.data() + (t.row_source[first + r] - *low) * row_bytes, row_bytes);
    }
    return absl::OkStatus();
  }
  for (uint64_t r = 0; r < count; ++r) {
    if (absl::Status st = read(t.row_source[first + r], 1, raw + r * row_bytes); !st.ok()) return st;
  }
  return absl::OkStatus();
}

// The tensor's bytes (one expert's, for a stacked tensor), without the alignment padding.
absl::Status WriteRows(const GgufOutputTensor& t, const GgufTensor& g, const RandomAccessObject& file,
                       PipelinedWriter& out, ProgressTracker& tracker, RateLimiter& pace, const JobContext& context) {
  const uint64_t row_elements = g.ne[0];
  const uint64_t rows = *ElementCount(t.source->shape) / std::max<uint64_t>(1, row_elements);
  const uint64_t row_bytes = *GgmlRowBytes(g.type, row_elements);
  const uint64_t rows_per_part = std::max<uint64_t>(1, kPartElements / std::max<uint64_t>(1, row_elements));
  const uint64_t rows_per_chunk =
      std::max<uint64_t>(1, kChunkElements / std::max<uint64_t>(1, row_elements) / rows_per_part) * rows_per_part;
  std::vector<std::byte> whole, span, raw;
  std::vector<float> values;
  // Bytes copied (rows reordered), not re-encoded, unless the values change.
  const bool as_is = SameType(t.source->dtype) == g.type && t.add == 0.0f;
  if (as_is && t.row_source.empty() && t.source->strides.empty()) {
    // Unchanged bytes in the same order: a transfer, which the writer hashes, writes and compares.
    for (uint64_t done = 0; done < t.source->size_bytes;) {
      if (absl::Status s = StopStatus(context); !s.ok()) return s;
      const uint64_t piece = pace.PieceBytes(std::min<uint64_t>(kChunkElements * 4, t.source->size_bytes - done));
      if (absl::Status s = out.AppendFrom(file, t.source->data_offset + done, piece); !s.ok()) {
        return Annotate(s, absl::StrCat("copying tensor '", t.source->name, "'"));
      }
      done += piece;
      tracker.AddBytes(piece);
      pace.Account(piece, [&] { return context.stop_requested(); });
    }
    return absl::OkStatus();
  }
  for (uint64_t row = 0; row < rows; row += rows_per_chunk) {
    if (absl::Status s = StopStatus(context); !s.ok()) return s;
    const uint64_t count = std::min(rows_per_chunk, rows - row);
    std::shared_ptr<std::byte[]> encoded = out.TakeBuffer(count * row_bytes);
    raw.resize(as_is ? 0 : count * row_elements * (DTypeBits(t.source->dtype) / 8));
    if (absl::Status s = GatherRows(t, file, row_elements, row, count, whole, span, as_is ? encoded.get() : raw.data());
        !s.ok()) {
      return Annotate(s, absl::StrCat("reading tensor '", t.source->name, "'"));
    }
    const uint64_t consumed = count * row_elements * (DTypeBits(t.source->dtype) / 8);
    if (as_is) {
      if (absl::Status s = out.AppendShared(std::move(encoded), count * row_bytes); !s.ok()) return s;
      tracker.AddBytes(consumed);
      pace.Account(consumed, [&] { return context.stop_requested(); });
      continue;
    }
    values.resize(count * row_elements);
    CastCounts ignored;
    CastElements(t.source->dtype, DType::kF32, raw.data(), count * row_elements,
                 reinterpret_cast<std::byte*>(values.data()), &ignored);
    if (t.add != 0.0f) {
      for (float& v : values) v += t.add;
    }
    const size_t parts = static_cast<size_t>((count + rows_per_part - 1) / rows_per_part);
    ParallelFor(parts, ComputeThreads(), [&](size_t part, size_t) {
      const uint64_t first = part * rows_per_part;
      const uint64_t n = std::min(rows_per_part, count - first);
      EncodeRows(g.type, values.data() + first * row_elements, n, row_elements,
                 reinterpret_cast<uint8_t*>(encoded.get()) + first * row_bytes);
    });
    if (absl::Status s = out.AppendShared(std::move(encoded), count * row_bytes); !s.ok()) return s;
    tracker.AddBytes(consumed);
    pace.Account(consumed, [&] { return context.stop_requested(); });
  }
  return absl::OkStatus();
}

// A tensor and its alignment padding; a stacked one expert by expert, each from its own file, so
// no more than one expert's rows are ever held.
absl::Status WriteTensor(const GgufOutputTensor& t, const GgufTensor& g, const ModelView& model, PipelinedWriter& out,
                         ProgressTracker& tracker, RateLimiter& pace, const JobContext& context) {
  static const std::byte kZeros[64] = {};
  if (t.source == nullptr) {
    if (absl::Status s = out.Append({reinterpret_cast<const std::byte*>(t.computed.data()), g.size_bytes}); !s.ok())
      return s;
  } else if (t.stacked.empty()) {
    if (absl::Status s = WriteRows(t, g, *model.files[t.source->file_index].object, out, tracker, pace, context);
        !s.ok())
      return s;
  } else {
    GgufTensor one = g;
    one.ne.pop_back();
    one.size_bytes = g.size_bytes / t.stacked.size();
    for (const TensorInfo* expert : t.stacked) {
      GgufOutputTensor part{expert, t.name, t.type, {}, {}, t.add};
      if (absl::Status s = WriteRows(part, one, *model.files[expert->file_index].object, out, tracker, pace, context);
          !s.ok())
        return s;
    }
  }
  return out.Append({kZeros, static_cast<size_t>(GgufPadding(g.size_bytes, kGgufDefaultAlignment))});
}

}  // namespace

absl::Status ValidateConvertToGguf(const v1::ConvertSpec& spec) {
  if (!absl::EndsWith(spec.output(), ".gguf")) {
    return FieldError("INVALID_OUTPUT", "convert.output",
                      absl::StrCat("output '", spec.output(), "' must be a .gguf file"));
  }
  if (!spec.variant().empty() || !spec.max_shard_size().empty() || spec.rename_size() > 0 || spec.keep_size() > 0 ||
      !spec.stem().empty()) {
    return FieldError("NOT_APPLICABLE", "convert.target_format",
                      "variant, max_shard_size, rename, keep and stem apply to safetensors output, not to GGUF");
  }
  return TargetType(spec).status();
}

struct ConvertGgufPlan {
  Plan plan;
};

absl::StatusOr<std::shared_ptr<ConvertGgufPlan>> MakeConvertGgufPlan(const v1::ConvertSpec& spec, const PlanEnv& env) {
  absl::StatusOr<Plan> plan = MakePlan(spec, env.router);
  if (!plan.ok()) return plan.status();
  const bool replace = spec.overwrite() || env.attempt > 1;
  if (absl::Status s = Publication::CheckFileVacant(env.router, spec.output(), replace, "convert.output"); !s.ok())
    return s;
  return std::make_shared<ConvertGgufPlan>(ConvertGgufPlan{*std::move(plan)});
}

absl::StatusOr<v1::JobResult> ProduceConvertGguf(ConvertGgufPlan& gguf_plan, const JobRun& run, JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  const v1::ConvertSpec& spec = run.spec.convert();
  Plan* plan = &gguf_plan.plan;
  absl::StatusOr<Publication> output =
      Publication::ForFile(*run.router, spec.output(), spec.overwrite(), run.attempt, "convert.output");
  if (!output.ok()) return output.status();
  ProgressTracker tracker(context, plan->model.tensor_bytes, plan->layout.size());
  tracker.SetPhase("execute");
  context.Log(absl::StrFormat(
      "converting '%s' (%s) to GGUF '%s' as %s, %d tensors", plan->model.uri, plan->mapping.architecture, output->uri(),
      GgmlTypeName(plan->layout.empty() ? GgmlType::kF16 : plan->layout.front().type), plan->layout.size()));
  absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = output->OpenWriter(output->uri());
  if (!writer.ok()) return writer.status();
  PipelinedWriter out(*std::move(writer), kQueuedWriteBytes, PipelinedWriter::ReadBackCheck::kCompare);
  auto fail = [&](absl::Status status) -> absl::Status {
    out.Abort();
    return status;
  };
  if (absl::Status s = out.Append({reinterpret_cast<const std::byte*>(plan->header.data()), plan->header.size()});
      !s.ok())
    return fail(s);
  RateLimiter pace(run.io_bytes_per_second);
  for (size_t i = 0; i < plan->layout.size(); ++i) {
    const GgufOutputTensor& t = plan->mapping.tensors[i];
    if (absl::Status s = WriteTensor(t, plan->layout[i], plan->model, out, tracker, pace, context); !s.ok())
      return fail(s);
    tracker.AddTensors(1);
  }
  absl::StatusOr<v1::Artifact> artifact = output->Stage(
      out, plan->file_bytes, "model",
      [&](const RandomAccessObject& written) { return CheckGgufTensorTable(written, plan->layout); }, tracker, context);
  if (!artifact.ok()) return artifact.status();

  v1::JobResult result;
  v1::JobFigures* figures = result.mutable_figures();
  v1::ConvertFigures* convert = figures->mutable_convert();
  convert->set_files(1);
  convert->set_tensors_written(plan->layout.size());
  uint32_t renamed = 0;
  for (const GgufOutputTensor& t : plan->mapping.tensors) renamed += t.source != nullptr && t.name != t.source->name;
  convert->set_tensors_renamed(renamed);
  convert->set_aliases_dropped(plan->model.aliases.size());
  convert->set_entries_skipped(plan->model.skipped_entries.size());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  figures->set_duration_seconds(seconds);
  figures->set_bytes_read(plan->model.tensor_bytes);
  figures->set_tensors(plan->layout.size());
  figures->set_throughput_bytes_per_second(seconds > 0 ? plan->model.tensor_bytes / seconds : 0);
  tracker.Flush();
  figures->set_peak_resident_bytes(tracker.peak_resident_bytes());
  ordered_json manifest = ManifestHeader(run, "convert", plan->model);
  ordered_json names = ordered_json::array();
  for (const GgufOutputTensor& t : plan->mapping.tensors) {
    std::string from = t.source == nullptr ? "(computed)" : t.source->name;
    if (!t.stacked.empty()) from = absl::StrCat(t.stacked.front()->name, " .. ", t.stacked.back()->name);
    names.push_back(
        {{"from", from}, {"to", t.name}, {"type", GgmlTypeName(t.type)}, {"rows_reordered", !t.row_source.empty()}});
  }
  manifest["convert"] = {{"architecture", plan->mapping.architecture}, {"tensors", std::move(names)}};
  manifest["figures"] = MessageJson(*figures);
  if (absl::Status s = output->Publish(std::move(manifest), result, tracker, context); !s.ok()) return s;
  return result;
}

}  // namespace modelsmith
