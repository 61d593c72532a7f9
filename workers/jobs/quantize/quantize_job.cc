#include "workers/jobs/quantize/quantize_job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"
#include "workers/formats/gguf.h"
#include "workers/formats/model_view.h"
#include "workers/jobs/quantize/layout_quantize_job.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/quantize/quantize_importance.h"
#include "workers/jobs/quantize/quantize_plan.h"
#include "workers/jobs/quantize/quantize_report.h"
#include "workers/formats/quantized_weight_reader.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/core/size_string.h"
#include "workers/jobs/core/publication.h"
#include "workers/pool/parallel_for.h"
#include "workers/quant/quality.h"
#include "workers/quant/quantize_rows.h"
#include "workers/storage/checksum.h"
#include "workers/storage/pipelined_writer.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

// Rows are processed in chunks of about kChunkElements (the encoded chunk is held until it is
// appended: 16 MiB at most, for F32 output), cut into parts of about kPartElements for the
// compute threads (each thread holds one part's source bytes and two F32 copies: 2-3 MiB).
constexpr uint64_t kChunkElements = 4 << 20;
constexpr uint64_t kPartElements = 256 << 10;
// Encoded chunks waiting for the writer thread (two or three chunks).
constexpr uint64_t kQueuedWriteBytes = 32 << 20;
constexpr uint64_t kQuantizeJobMemoryBytes = 96 << 20;

struct PlannedTensor {
  const TensorInfo* source;
  TensorPlan plan;
  GgufTensor out;
  uint64_t row_elements = 1;
  uint64_t rows = 0;
  // Set for a weight held in a bitsandbytes / quanto / ChatGLM / fp8 layout: it is read back
  // through this, and `source` is its stand-in float tensor.
  const QuantizedWeightReader* reader = nullptr;
  // Its importance values (columns x experts), or null.
  const std::vector<float>* importance = nullptr;
};

struct GgufPlan {
  ModelView model;
  QuantizePlanner planner;
  std::vector<PlannedTensor> tensors;
  bool requantizes = false;
  RequantizeInputs requantize;
  JobImportance importance;
};

bool IsBlockType(GgmlType t) { return GgmlTraits(static_cast<uint32_t>(t))->quantized; }
absl::string_view TypeName(GgmlType t) { return GgmlTypeName(t); }

// llama-quantize's tensor order (its loader's weight map): by the layer number of "blk.N." names,
// tensors outside any layer first, then by name (bytewise) within a layer. The per-tensor type
// rules count attention-V and FFN-down tensors in this order, and the output file lists them in it.
std::vector<size_t> LlamaQuantizeOrder(const std::vector<TensorInfo>& tensors) {
  auto layer = [](const std::string& name) {
    int n = -1;
    return std::sscanf(name.c_str(), "blk.%d.", &n) == 1 ? n : -1;
  };
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const int la = layer(tensors[a].name), lb = layer(tensors[b].name);
    return la != lb ? la < lb : tensors[a].name < tensors[b].name;
  });
  return order;
}

// The model facts the presets' rules read, from a GGUF input's metadata.
QuantizePlanner::ModelFacts FactsOf(const ModelView& model) {
  QuantizePlanner::ModelFacts facts;
  if (!model.gguf) return facts;
  const GgufKv* arch = model.gguf->Find("general.architecture");
  if (arch == nullptr || !arch->AsString()) return facts;
  facts.arch = *arch->AsString();
  auto count = [&](const std::string& key) -> int {
    const GgufKv* kv = model.gguf->Find(facts.arch + "." + key);
    const std::optional<uint64_t> value = kv != nullptr ? kv->AsUnsigned() : std::nullopt;
    return value && *value < 1'000'000 ? static_cast<int>(*value) : 0;
  };
  facts.n_layer = count("block_count");
  facts.n_expert = count("expert_count");
  facts.n_head = count("attention.head_count");
  facts.n_head_kv = count("attention.head_count_kv");
  return facts;
}

absl::StatusOr<GgufPlan> MakeGgufPlan(const v1::QuantizeSpec& spec, QuantizePlanner planner,
                                      const StorageRouter& router) {
  absl::StatusOr<Location> input = router.Resolve(spec.input());
  if (!input.ok()) return WithReason(input.status(), ReasonOf(input.status()), {{"field", "quantize.input"}});
  absl::StatusOr<ModelView> model = OpenModel(*input);
  if (!model.ok()) return WithReason(model.status(), ReasonOf(model.status()), {{"field", "quantize.input"}});
  if (absl::Status s = RefuseTorchInput(*model); !s.ok()) return s;
  absl::StatusOr<std::optional<nlohmann::json>> config = ReadModelConfig(*input->store, *model);
  if (!config.ok()) return config.status();
  absl::StatusOr<RequantizeInputs> requantize = OpenRequantizeInputs(*model, *config, spec.allow_requantize());
  if (!requantize.ok()) return requantize.status();
  absl::StatusOr<JobImportance> importance = LoadJobImportance(spec, router);
  if (!importance.ok()) return importance.status();
  GgufPlan plan{*std::move(model), std::move(planner), {}, false, *std::move(requantize), *std::move(importance)};
  const std::vector<size_t> order = LlamaQuantizeOrder(plan.model.tensors);
  std::vector<const TensorInfo*> ordered;
  ordered.reserve(order.size());
  for (size_t index : order) ordered.push_back(&plan.model.tensors[index]);
  QuantizePlanner::ModelFacts facts = FactsOf(plan.model);
  facts.has_imatrix = plan.importance.matrix != nullptr;
  plan.planner.PrepareForModel(ordered, facts);
  for (size_t index : order) {
    const TensorInfo& stored = plan.model.tensors[index];
    const QuantizedWeightReader* reader = nullptr;
    const TensorInfo* stand_in = plan.requantize.StandIn(stored, &reader);
    if (stand_in == nullptr) continue;
    if (reader != nullptr) plan.requantizes = true;
    const TensorInfo& t = *stand_in;
    absl::StatusOr<TensorPlan> decision = plan.planner.Plan(t);
    if (!decision.ok()) return decision.status();
    if (IsBlockType(decision->source_type)) {
      if (!spec.allow_requantize()) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "ALREADY_QUANTIZED",
                         absl::StrCat("tensor '", t.name, "' is already ", TypeName(decision->source_type),
                                      "; quantizing it again loses precision (set allow_requantize to do it anyway)"),
                         {{"tensor", t.name}, {"field", "quantize.input"}});
      }
      if (!CanEncode(decision->source_type)) {
        return MakeError(
            absl::StatusCode::kInvalidArgument, "UNSUPPORTED_TYPE",
            absl::StrCat("tensor '", t.name, "' is ", TypeName(decision->source_type), ", which cannot be dequantized"),
            {{"tensor", t.name}});
      }
      plan.requantizes = true;
      if (decision->target_type == decision->source_type) decision->target_type = GgmlType::kF32;
    }
    if (t.name.size() > 63) {
      return MakeError(absl::StatusCode::kInvalidArgument, "NAME_TOO_LONG",
                       absl::StrCat("tensor '", t.name, "' has a name of ", t.name.size(),
                                    " bytes; GGUF allows 63 (rename it with the convert job)"),
                       {{"tensor", t.name}});
    }
    PlannedTensor p{&t, *decision, {}, 1, 0, reader};
    if (decision->target_type != decision->source_type && IsBlockType(decision->target_type)) {
      absl::StatusOr<const std::vector<float>*> values =
          ImportanceFor(plan.importance, plan.planner, t, decision->target_type);
      if (!values.ok()) return values.status();
      p.importance = *values;
    }
    p.row_elements = t.shape.empty() ? 1 : t.shape.back();
    const uint64_t elements = ElementCount(t.shape).value_or(0);
    p.rows = p.row_elements == 0 ? 0 : elements / p.row_elements;
    p.out.name = t.name;
    p.out.ne = t.shape.empty() ? std::vector<uint64_t>{1} : std::vector<uint64_t>(t.shape.rbegin(), t.shape.rend());
    p.out.type = decision->target_type;
    p.out.size_bytes = p.rows * *GgmlRowBytes(decision->target_type, p.row_elements);
    plan.tensors.push_back(std::move(p));
  }
  return plan;
}

// The input's metadata in its order, then general.quantization_version and general.file_type
// last, as llama-quantize writes them (setting a key that exists moves it to the end).
std::vector<GgufKv> OutputKvs(const GgufPlan& plan) {
  std::vector<GgufKv> kvs;
  const GgufKv file_type = GgufKv::U32("general.file_type", plan.planner.file_type());
  const GgufKv version = GgufKv::U32("general.quantization_version", kGgmlQuantizationVersion);
  if (plan.model.gguf) {
    for (const GgufKv& kv : plan.model.gguf->kvs) {
      if (kv.key == "general.alignment") continue;       // the output uses the default alignment
      if (absl::StartsWith(kv.key, "split.")) continue;  // a split input becomes one file
      if (kv.key == file_type.key || kv.key == version.key) continue;
      kvs.push_back(kv);
    }
  }
  kvs.push_back(version);
  kvs.push_back(file_type);
  for (GgufKv& kv : ImportanceKvs(plan.importance)) kvs.push_back(std::move(kv));
  return kvs;
}

// One output file: the whole model, or one part of a split output.
struct OutputPart {
  std::string uri;
  std::vector<size_t> tensors;  // indices into GgufPlan::tensors
  std::vector<GgufTensor> layout;
  std::string header;
  uint64_t bytes = 0;
};

GgufKv SplitKv(const std::string& key, GgufValueType type, uint64_t value) {
  GgufKv kv;
  kv.key = key;
  kv.type = type;
  kv.value_bytes.assign(reinterpret_cast<const char*>(&value), type == GgufValueType::kU16 ? 2 : 4);
  return kv;
}

// gguf-split's strategy: tensors in order, a new part when the next tensor's padded bytes would
// take the current part over `max_bytes` (a part always holds at least one tensor). The first
// part carries the metadata, every part split.no / split.count (U16) / split.tensors.count (I32).
std::vector<OutputPart> PlanParts(const GgufPlan& plan, const std::string& output_uri, uint64_t max_bytes) {
  std::vector<OutputPart> parts(1);
  uint64_t current = 0;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const uint64_t padded =
        plan.tensors[i].out.size_bytes + GgufPadding(plan.tensors[i].out.size_bytes, kGgufDefaultAlignment);
    if (max_bytes > 0 && !parts.back().tensors.empty() && current + padded > max_bytes) {
      parts.emplace_back();
      current = 0;
    }
    parts.back().tensors.push_back(i);
    current += padded;
  }
  const std::string stem = output_uri.substr(0, output_uri.size() - std::strlen(".gguf"));
  for (size_t p = 0; p < parts.size(); ++p) {
    OutputPart& part = parts[p];
    std::vector<GgufKv> kvs;
    if (p == 0) kvs = OutputKvs(plan);
    if (max_bytes > 0) {
      part.uri = GgufSplitUri(stem, p + 1, parts.size());
      kvs.push_back(SplitKv("split.no", GgufValueType::kU16, p));
      kvs.push_back(SplitKv("split.count", GgufValueType::kU16, parts.size()));
      kvs.push_back(SplitKv("split.tensors.count", GgufValueType::kI32, plan.tensors.size()));
    } else {
      part.uri = output_uri;
    }
    for (size_t i : part.tensors) part.layout.push_back(plan.tensors[i].out);
    part.header = SerializeGgufHeader(kvs, part.layout);
    part.bytes = part.header.size();
    for (const GgufTensor& t : part.layout)
      part.bytes += t.size_bytes + GgufPadding(t.size_bytes, kGgufDefaultAlignment);
  }
  return parts;
}

absl::Status AppendZeros(ObjectWriter& writer, uint64_t count) {
  static const std::byte kZeros[64] = {};
  return writer.Append({kZeros, static_cast<size_t>(count)});
}

// Encodes rows [first, first + count) of `t`; with importance data, each row with its expert's
// slice (a 3-D tensor's experts each have their own columns' values, as llama-quantize passes them).
void EncodeWithImportance(const PlannedTensor& t, uint64_t first, uint64_t count, const float* values,
                          uint8_t* target) {
  const uint64_t target_row_bytes = *GgmlRowBytes(t.plan.target_type, t.row_elements);
  if (t.importance == nullptr) {
    EncodeRows(t.plan.target_type, values, count, t.row_elements, target);
    return;
  }
  const std::vector<uint64_t>& shape = t.source->shape;
  const uint64_t rows_per_expert = shape.size() >= 3 ? shape[shape.size() - 2] : t.rows;
  for (uint64_t row = first; row < first + count;) {
    const uint64_t expert = row / rows_per_expert;
    const uint64_t rows = std::min(first + count, (expert + 1) * rows_per_expert) - row;
    EncodeRows(t.plan.target_type, values + (row - first) * t.row_elements, rows, t.row_elements,
               target + (row - first) * target_row_bytes, t.importance->data() + expert * t.row_elements);
    row += rows;
  }
}

// Writes one tensor that changes type, chunk by chunk; fills `quality`. Each chunk is cut into
// parts of about kPartElements that the compute threads take in any order, each reading its own
// rows and writing its own slice of the chunk's output and its own quality figures; the figures
// are merged in part order, so neither bytes nor figures depend on the number of threads.
absl::Status Transcode(const PlannedTensor& t, const RandomAccessObject& file, PipelinedWriter& out,
                       QualityStats& quality, ProgressTracker& tracker, RateLimiter& pace, const JobContext& context) {
  struct Scratch {
    std::vector<std::byte> source;
    std::vector<float> values, back;
  };
  const GgmlType source_type = t.plan.source_type;
  const uint64_t source_row_bytes = *GgmlRowBytes(source_type, t.row_elements);
  const uint64_t target_row_bytes = *GgmlRowBytes(t.plan.target_type, t.row_elements);
  const uint64_t row_elements = std::max<uint64_t>(1, t.row_elements);
  const uint64_t rows_per_part = std::max<uint64_t>(1, kPartElements / row_elements);
  const uint64_t rows_per_chunk = std::max<uint64_t>(1, kChunkElements / row_elements / rows_per_part) * rows_per_part;
  const size_t threads = ComputeThreads();
  std::vector<Scratch> scratch(threads);
  std::vector<QualityStats> part_quality;
  std::vector<absl::Status> part_status;
  for (uint64_t row = 0; row < t.rows; row += rows_per_chunk) {
    if (absl::Status s = StopStatus(context); !s.ok()) return s;
    const uint64_t rows = std::min(rows_per_chunk, t.rows - row);
    const size_t parts = (rows + rows_per_part - 1) / rows_per_part;
    // Each chunk gets its own buffer (from the writer's pool), handed to the writer thread while
    // the next is computed.
    std::shared_ptr<std::byte[]> encoded = out.TakeBuffer(rows * target_row_bytes);
    part_quality.assign(parts, QualityStats());
    part_status.assign(parts, absl::OkStatus());
    ParallelFor(parts, threads, [&](size_t part, size_t worker) {
      Scratch& w = scratch[worker];
      const uint64_t first = row + part * rows_per_part;
      const uint64_t count = std::min(rows_per_part, row + rows - first);
      const uint64_t elements = count * t.row_elements;
      if (w.values.size() < elements) w.values.resize(elements);
      if (w.back.size() < elements) w.back.resize(elements);
      if (t.reader != nullptr) {
        if (absl::Status s = t.reader->ReadElements(first * t.row_elements, elements, w.values.data()); !s.ok()) {
          part_status[part] = Annotate(s, absl::StrCat("reading back '", t.source->name, "'"));
          return;
        }
      } else {
        if (w.source.size() < count * source_row_bytes) w.source.resize(count * source_row_bytes);
        if (absl::Status s = file.ReadAt(t.source->data_offset + first * source_row_bytes, count * source_row_bytes,
                                         w.source.data());
            !s.ok()) {
          part_status[part] = Annotate(s, absl::StrCat("reading tensor '", t.source->name, "'"));
          return;
        }
        DecodeRows(source_type, reinterpret_cast<const uint8_t*>(w.source.data()), count, t.row_elements,
                   w.values.data());
      }
      uint8_t* target = reinterpret_cast<uint8_t*>(encoded.get()) + (first - row) * target_row_bytes;
      EncodeWithImportance(t, first, count, w.values.data(), target);
      DecodeRows(t.plan.target_type, target, count, t.row_elements, w.back.data());
      part_quality[part].Add(w.values.data(), w.back.data(), elements);
    });
    for (size_t part = 0; part < parts; ++part) {
      if (!part_status[part].ok()) return part_status[part];
      quality.Merge(part_quality[part]);
    }
    if (absl::Status s = out.AppendShared(std::move(encoded), rows * target_row_bytes); !s.ok()) return s;
    tracker.AddBytes(rows * source_row_bytes);
    pace.Account(rows * source_row_bytes, [&] { return context.stop_requested(); });
  }
  return absl::OkStatus();
}

// Writes one planned tensor (copied, or transcoded with its quality row) and its padding.
absl::Status WriteTensor(const GgufPlan& plan, const PlannedTensor& t, PipelinedWriter& out, QuantizeReport& report,
                         ProgressTracker& tracker, RateLimiter& pace, JobContext& context) {
  const RandomAccessObject& file = *plan.model.files[t.source->file_index].object;
  if (t.plan.warn_not_quantizable) {
    context.Warn("TENSOR_NOT_QUANTIZABLE",
                 absl::StrCat("tensor '", t.source->name, "': rows of ", t.row_elements, " elements are not whole ",
                              TypeName(plan.planner.scheme_type()), " blocks; kept as ", TypeName(t.plan.target_type)),
                 t.source->name);
  }
  if (t.plan.target_type == t.plan.source_type && t.reader == nullptr) {
    if (absl::Status s = CopyTensorBytes(*t.source, file, out, tracker, pace, context); !s.ok()) return s;
    report.AddKept();
  } else {
    if (IsBlockType(t.plan.source_type) || t.reader != nullptr) {
      const std::string was = t.reader != nullptr ? t.reader->layout() : std::string(TypeName(t.plan.source_type));
      context.Warn("REQUANTIZED",
                   absl::StrCat("tensor '", t.source->name, "' was ", was,
                                "; it was dequantized and its lost precision cannot come back"),
                   t.source->name);
    }
    QualityStats quality;
    if (absl::Status s = Transcode(t, file, out, quality, tracker, pace, context); !s.ok()) return s;
    report.AddTranscoded(context, t.source->name, std::string(TypeName(t.plan.target_type)), quality,
                         IsBlockType(t.plan.target_type));
  }
  if (absl::Status s = AppendZeros(out, GgufPadding(t.out.size_bytes, kGgufDefaultAlignment)); !s.ok()) return s;
  tracker.AddTensors(1);
  return absl::OkStatus();
}

}  // namespace

// The GGUF plan of a quantize job: the tensors' types and the output files.
struct GgufQuantizePlan {
  GgufPlan plan;
  std::vector<OutputPart> parts;
  std::string output_uri;  // the named file, resolved
  bool split = false;
};

absl::StatusOr<QuantizeOptions> QuantizeJob::Parse(const v1::JobSpec& job_spec) {
  const v1::QuantizeSpec& spec = job_spec.quantize();
  QuantizeOptions options;
  options.spec = spec;
  if (IsLayoutScheme(spec.scheme())) {
    if (absl::Status s = ValidateLayoutQuantizeSpec(spec); !s.ok()) return s;
    options.layout = true;
    return options;
  }
  if (spec.input().empty()) return FieldError("MISSING_FIELD", "quantize.input", "'quantize.input' is required");
  if (spec.output().empty()) return FieldError("MISSING_FIELD", "quantize.output", "'quantize.output' is required");
  absl::StatusOr<QuantizePlanner> planner = QuantizePlanner::Create(spec);
  if (!planner.ok()) return planner.status();
  options.planner = *std::move(planner);
  if (!absl::EndsWith(spec.output(), ".gguf")) {
    return FieldError("INVALID_OUTPUT", "quantize.output",
                      absl::StrCat("output '", spec.output(), "' must be a .gguf file for GGUF schemes"));
  }
  if (spec.snr_warning_db() < 0 || !std::isfinite(spec.snr_warning_db())) {
    return FieldError("INVALID_VALUE", "quantize.snr_warning_db", "must be a non-negative number of dB");
  }
  if (!spec.max_split_size().empty()) {
    absl::StatusOr<uint64_t> size = ParseSize(spec.max_split_size());
    if (!size.ok() || *size == 0) {
      return FieldError("INVALID_SIZE", "quantize.max_split_size",
                        absl::StrCat("'", spec.max_split_size(), "' is not a size such as 2GB or 500MB",
                                     size.ok() ? "" : absl::StrCat(": ", size.status().message())));
    }
    options.max_split_bytes = *size;
  }
  return options;
}

absl::StatusOr<QuantizeJobPlan> QuantizeJob::MakePlan(const QuantizeOptions& options, const PlanEnv& env) {
  const v1::QuantizeSpec& spec = options.spec;
  const bool replace = spec.overwrite() || env.attempt > 1;
  QuantizeJobPlan job_plan;
  if (options.layout) {
    absl::StatusOr<LayoutPlan> plan = MakeLayoutPlan(spec, env.router);
    if (!plan.ok()) return plan.status();
    if (absl::Status s = Publication::CheckDirectoryVacant(env.router, spec.output(), replace, "quantize.output");
        !s.ok()) {
      return s;
    }
    job_plan.layout = std::make_shared<LayoutPlan>(*std::move(plan));
    job_plan.estimated_peak_bytes = kLayoutQuantizeJobMemoryBytes;
    return job_plan;
  }
  absl::StatusOr<GgufPlan> plan = MakeGgufPlan(spec, *options.planner, env.router);
  if (!plan.ok()) return plan.status();
  absl::StatusOr<Location> resolved = env.router.Resolve(spec.output());
  if (!resolved.ok()) return WithReason(resolved.status(), ReasonOf(resolved.status()), {{"field", "quantize.output"}});
  auto gguf = std::make_shared<GgufQuantizePlan>();
  gguf->output_uri = resolved->uri;
  gguf->split = options.max_split_bytes > 0;
  gguf->plan = *std::move(plan);
  gguf->parts = PlanParts(gguf->plan, gguf->output_uri, options.max_split_bytes);
  // Parts other than the named file obey the same rules (vacant unless overwriting or rerunning).
  std::vector<std::string> files = {gguf->output_uri};
  if (gguf->split) {
    for (const OutputPart& part : gguf->parts) files.push_back(part.uri);
  }
  for (const std::string& uri : files) {
    if (absl::Status s = Publication::CheckFileVacant(env.router, uri, replace, "quantize.output"); !s.ok()) return s;
  }
  job_plan.gguf = std::move(gguf);
  job_plan.estimated_peak_bytes = kQuantizeJobMemoryBytes;
  return job_plan;
}

absl::StatusOr<v1::JobResult> QuantizeJob::Produce(QuantizeJobPlan& job_plan, const JobRun& run, JobContext& context) {
  if (job_plan.layout != nullptr) return ProduceLayoutQuantize(*job_plan.layout, run, context);
  const auto start = std::chrono::steady_clock::now();
  const v1::QuantizeSpec& spec = run.spec.quantize();
  GgufPlan* plan = &job_plan.gguf->plan;
  const std::vector<OutputPart>& parts = job_plan.gguf->parts;
  std::vector<std::string> part_uris;
  if (job_plan.gguf->split) {
    for (const OutputPart& part : parts) part_uris.push_back(part.uri);
  }
  absl::StatusOr<Publication> output = Publication::ForFile(*run.router, job_plan.gguf->output_uri, spec.overwrite(),
                                                            run.attempt, "quantize.output", part_uris);
  if (!output.ok()) return output.status();

  ProgressTracker tracker(context, plan->model.tensor_bytes, plan->tensors.size());
  tracker.SetPhase("plan");
  context.Log(absl::StrFormat("quantizing %d tensors (%d bytes) from '%s' to %s at '%s' (%d file(s))",
                              plan->tensors.size(), plan->model.tensor_bytes, plan->model.uri,
                              TypeName(plan->planner.scheme_type()), output->uri(), parts.size()));
  tracker.SetPhase("execute");
  RateLimiter pace(run.io_bytes_per_second);
  QuantizeReport report(spec.snr_warning_db());
  for (const OutputPart& part : parts) {
    absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = output->OpenWriter(part.uri);
    if (!writer.ok()) return writer.status();
    PipelinedWriter out(*std::move(writer), kQueuedWriteBytes, PipelinedWriter::ReadBackCheck::kDigest);
    auto fail = [&](absl::Status status) -> absl::Status {
      out.Abort();
      return status;
    };
    if (absl::Status s = out.Append({reinterpret_cast<const std::byte*>(part.header.data()), part.header.size()});
        !s.ok()) {
      return fail(s);
    }
    for (size_t i : part.tensors) {
      if (absl::Status s = WriteTensor(*plan, plan->tensors[i], out, report, tracker, pace, context); !s.ok())
        return fail(s);
    }
    absl::StatusOr<v1::Artifact> artifact = output->Stage(
        out, part.bytes, "model",
        [&](const RandomAccessObject& written) { return CheckGgufTensorTable(written, part.layout); }, tracker,
        context);
    if (!artifact.ok()) return artifact.status();
    tracker.SetPhase("execute");
  }

  v1::JobResult result;
  ordered_json manifest = report.Finish(run, plan->model, start, tracker, &result);
  if (absl::Status s = output->Publish(std::move(manifest), result, tracker, context); !s.ok()) return s;
  return result;
}

}  // namespace modelsmith
