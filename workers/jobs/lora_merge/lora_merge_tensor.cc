#include "workers/jobs/lora_merge/lora_merge_tensor.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/formats/tensor_reader.h"
#include "workers/jobs/quantize/layout_weight_writer.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/pool/parallel_for.h"
#include "workers/quant/cast.h"
#include "workers/quant/quantize_rows.h"
#include "workers/storage/memory_writer.h"
#include "workers/tensor/ggml_types.h"

namespace modelsmith {
namespace {

// Rows are merged in chunks of about kChunkElements (held until the writer takes them), cut into
// parts of about kPartElements for the compute threads (each holds a part's stored bytes and
// three F32 copies: about 3 MiB).
constexpr uint64_t kChunkElements = 4 << 20;
constexpr uint64_t kPartElements = 256 << 10;

// Decodes and encodes whole rows of the stored type: a float dtype (F32/F16/BF16 through the
// ggml codecs of the same rounding, which have AVX2 versions; fp8 through the casts the convert
// job uses) or a GGUF ggml type.
class RowCodec {
 public:
  RowCodec(GgmlType type, uint64_t cols) : cols_(cols), type_(type), row_bytes_(*GgmlRowBytes(type, cols)) {}
  static RowCodec Stored(const TensorInfo& t, uint64_t cols) {
    if (t.ggml_type) return RowCodec(static_cast<GgmlType>(*t.ggml_type), cols);
    if (t.dtype == DType::kF8E4M3 || t.dtype == DType::kF8E5M2) return RowCodec(t.dtype, cols);
    return RowCodec(t.dtype == DType::kF16    ? GgmlType::kF16
                    : t.dtype == DType::kBF16 ? GgmlType::kBF16
                                              : GgmlType::kF32,
                    cols);
  }
  uint64_t row_bytes() const { return row_bytes_; }

  void Decode(const std::byte* in, uint64_t rows, float* out) const {
    if (fp8_) {
      CastCounts ignored;
      CastElements(*fp8_, DType::kF32, in, rows * cols_, reinterpret_cast<std::byte*>(out), &ignored);
      return;
    }
    DecodeRows(type_, reinterpret_cast<const uint8_t*>(in), rows, cols_, out);
  }
  void Encode(const float* in, uint64_t rows, std::byte* out) const {
    if (fp8_) {
      CastCounts ignored;  // values past the fp8 range saturate, as the convert job's cast does
      CastElements(DType::kF32, *fp8_, reinterpret_cast<const std::byte*>(in), rows * cols_, out, &ignored);
      return;
    }
    EncodeRows(type_, in, rows, cols_, reinterpret_cast<uint8_t*>(out));
  }

 private:
  RowCodec(DType fp8, uint64_t cols) : cols_(cols), type_(GgmlType::kF32), row_bytes_(cols), fp8_(fp8) {}

  uint64_t cols_;
  GgmlType type_;
  uint64_t row_bytes_ = 0;
  std::optional<DType> fp8_;
};

absl::StatusOr<std::vector<float>> ReadAsFloats(const LoraAdapterInput& adapter, const TensorInfo& t) {
  const uint64_t elements = ElementCount(t.shape).value_or(0);
  std::vector<std::byte> raw(t.size_bytes);
  if (absl::Status s = ReadTensorBytes(*adapter.view.files[t.file_index].object, t, 0, t.size_bytes, raw.data());
      !s.ok()) {
    return Annotate(s, absl::StrCat("reading adapter tensor '", t.name, "' of '", adapter.uri, "'"));
  }
  std::vector<float> values(elements);
  CastCounts ignored;
  CastElements(t.dtype, DType::kF32, raw.data(), elements, reinterpret_cast<std::byte*>(values.data()), &ignored);
  return values;
}

uint64_t Product(const std::vector<uint64_t>& shape, size_t from) {
  uint64_t n = 1;
  for (size_t i = from; i < shape.size(); ++i) n *= shape[i];
  return n;
}

}  // namespace

absl::StatusOr<std::vector<LowRankUpdate>> LoadUpdates(const MergeTensor& t) {
  std::vector<LowRankUpdate> updates;
  for (const MergeUpdate& u : t.updates) {
    const LoraModule& m = *u.target->module;
    absl::StatusOr<std::vector<float>> up = ReadAsFloats(*u.adapter, *m.up);
    if (!up.ok()) return up.status();
    absl::StatusOr<std::vector<float>> down = ReadAsFloats(*u.adapter, *m.down);
    if (!down.ok()) return down.status();
    std::vector<float> magnitude;
    if (m.magnitude != nullptr) {
      absl::StatusOr<std::vector<float>> read = ReadAsFloats(*u.adapter, *m.magnitude);
      if (!read.ok()) return read.status();
      magnitude = *std::move(read);
    }
    const uint64_t out = m.up->shape[0];
    const uint64_t cols_a = Product(m.down->shape, 1);
    if (m.groups > 1) {
      // A grouped B [out, r / groups] as the dense [out, r] it stands for: zeros outside each output
      // channel's group (a zero step adds nothing, so the update stays exact).
      const uint64_t per_group = m.rank / m.groups, outs_per_group = out / m.groups;
      std::vector<float> dense(out * m.rank, 0.0f);
      for (uint64_t o = 0; o < out; ++o) {
        std::copy_n(up->data() + o * per_group, per_group,
                    dense.data() + o * m.rank + (o / outs_per_group) * per_group);
      }
      *up = std::move(dense);
    }
    if (!t.row_of_hf_row.empty()) {
      // Row r of the Hugging Face weight is stored as row row_of_hf_row[r]: move B's rows (and the
      // DoRA magnitudes, one per row) there too.
      std::vector<float> permuted(up->size());
      for (uint64_t r = 0; r < out; ++r) {
        std::copy_n(up->data() + r * m.rank, m.rank, permuted.data() + t.row_of_hf_row[r] * m.rank);
      }
      *up = std::move(permuted);
      if (!magnitude.empty()) {
        std::vector<float> moved(magnitude.size());
        for (uint64_t r = 0; r < out; ++r) moved[t.row_of_hf_row[r]] = magnitude[r];
        magnitude = std::move(moved);
      }
    }
    if (magnitude.size() != (m.magnitude == nullptr ? 0 : out)) {
      return MakeError(absl::StatusCode::kInvalidArgument, "LORA_SHAPE_MISMATCH",
                       absl::StrCat("DoRA magnitude of module '", m.key, "' has ", magnitude.size(), " values for ",
                                    out, " output rows"),
                       {{"tensor", m.magnitude->name}});
    }
    updates.emplace_back(*std::move(up), *std::move(down), out, m.rank, cols_a, m.scale, u.adapter->strength,
                         m.fan_in_fan_out, std::move(magnitude));
    if (updates.back().base_rows() != t.rows || updates.back().base_cols() != t.cols) {
      return MakeError(
          absl::StatusCode::kInternal, "LORA_SHAPE_MISMATCH",
          absl::StrCat("module '", m.key, "' updates [", updates.back().base_rows(), ", ", updates.back().base_cols(),
                       "] but base tensor '", t.base->name, "' is [", t.rows, ", ", t.cols, "]"),
          {{"tensor", t.base->name}});
    }
  }
  return updates;
}

uint64_t MergedTensorBytes(const MergeTensor& t) {
  if (!t.dequantize_to) return t.base->size_bytes;
  return t.rows * GgmlRowBytes(*t.dequantize_to, t.cols).value_or(0);
}

absl::Status WriteMergedTensor(const MergeTensor& t, const std::vector<LowRankUpdate>& updates,
                               const RandomAccessObject& file, PipelinedWriter& out, ProgressTracker& tracker,
                               RateLimiter& pace, const JobContext& context, MergedTensorFigures* figures) {
  struct Scratch {
    std::vector<std::byte> stored;
    std::vector<float> original, merged, back;
  };
  struct PartFigures {
    QualityStats update, written;
  };
  // Rows come from the stored bytes, or from the layout's reader for a quantized group; they go
  // out in the stored type, or in the float type of a dequantized weight.
  const RowCodec stored = RowCodec::Stored(*t.base, t.cols);
  const RowCodec codec = t.dequantize_to ? RowCodec(*t.dequantize_to, t.cols) : stored;
  const uint64_t row_bytes = codec.row_bytes();
  if (t.reader == nullptr && stored.row_bytes() * t.rows != t.base->size_bytes) {
    return MakeError(absl::StatusCode::kInternal, "LORA_SHAPE_MISMATCH",
                     absl::StrCat("base tensor '", t.base->name, "' holds ", t.base->size_bytes, " bytes, not ", t.rows,
                                  " rows of ", stored.row_bytes()),
                     {{"tensor", t.base->name}});
  }
  if (t.reader != nullptr && (!t.dequantize_to || t.reader->rows() != t.rows || t.reader->columns() != t.cols)) {
    return MakeError(absl::StatusCode::kInternal, "INTERNAL",
                     absl::StrCat("'", t.reader->name(), "' is not a dequantized merge target"),
                     {{"tensor", t.reader->name()}});
  }
  const uint64_t cols = std::max<uint64_t>(1, t.cols);
  const uint64_t rows_per_part = std::max<uint64_t>(1, kPartElements / cols);
  const uint64_t rows_per_chunk = std::max<uint64_t>(1, kChunkElements / cols / rows_per_part) * rows_per_part;
  const size_t threads = ComputeThreads();
  std::vector<Scratch> scratch(threads);
  std::vector<PartFigures> part_figures;
  QualityStats update;
  std::vector<absl::Status> part_status;
  for (uint64_t row = 0; row < t.rows; row += rows_per_chunk) {
    if (absl::Status s = StopStatus(context); !s.ok()) return s;
    const uint64_t rows = std::min(rows_per_chunk, t.rows - row);
    const size_t parts = (rows + rows_per_part - 1) / rows_per_part;
    std::shared_ptr<std::byte[]> encoded = out.TakeBuffer(rows * row_bytes);
    part_figures.assign(parts, PartFigures());
    part_status.assign(parts, absl::OkStatus());
    // Parts write disjoint slices of the chunk and keep their own figures, merged in part order,
    // so neither the bytes nor the figures depend on the number of threads.
    ParallelFor(parts, threads, [&](size_t part, size_t worker) {
      Scratch& w = scratch[worker];
      const uint64_t first = row + part * rows_per_part;
      const uint64_t count = std::min(rows_per_part, row + rows - first);
      const uint64_t elements = count * t.cols;
      w.original.resize(elements);
      w.merged.resize(elements);
      w.back.resize(elements);
      if (t.reader != nullptr) {
        if (absl::Status s = t.reader->ReadRows(first, count, w.original.data()); !s.ok()) {
          part_status[part] = Annotate(s, absl::StrCat("reading back base weight '", t.reader->name(), "'"));
          return;
        }
      } else {
        const uint64_t stored_row_bytes = stored.row_bytes();
        w.stored.resize(count * stored_row_bytes);
        if (absl::Status s =
                file.ReadAt(t.base->data_offset + first * stored_row_bytes, count * stored_row_bytes, w.stored.data());
            !s.ok()) {
          part_status[part] = Annotate(s, absl::StrCat("reading base tensor '", t.base->name, "'"));
          return;
        }
        stored.Decode(w.stored.data(), count, w.original.data());
      }
      std::copy(w.original.begin(), w.original.end(), w.merged.begin());
      for (const LowRankUpdate& u : updates) u.ApplyRows(first, count, w.merged.data());
      std::byte* target = encoded.get() + (first - row) * row_bytes;
      codec.Encode(w.merged.data(), count, target);
      codec.Decode(target, count, w.back.data());
      part_figures[part].update.Add(w.original.data(), w.merged.data(), elements);
      part_figures[part].written.Add(w.merged.data(), w.back.data(), elements);
    });
    for (size_t part = 0; part < parts; ++part) {
      if (!part_status[part].ok()) return part_status[part];
      update.Merge(part_figures[part].update);
      figures->written.Merge(part_figures[part].written);
    }
    if (absl::Status s = out.AppendShared(std::move(encoded), rows * row_bytes); !s.ok()) return s;
    tracker.AddBytes(t.reader != nullptr ? 0
                                         : rows * stored.row_bytes());  // base bytes; a group's are counted by the job
    pace.Account(rows * row_bytes, [&] { return context.stop_requested(); });
  }
  figures->relative_update = update.relative_error();
  return absl::OkStatus();
}

MergedWeightReader::MergedWeightReader(const QuantizedWeightReader& base, std::vector<LowRankUpdate> updates)
    : base_(base), updates_(std::move(updates)), row_signal_(base.rows()), row_change_(base.rows()) {
  name_ = base.name();
  shape_ = base.shape();
  original_ = base.original_type();
  layout_ = base.layout();
}

absl::Status MergedWeightReader::ReadRows(uint64_t first, uint64_t count, float* out) const {
  if (absl::Status s = base_.ReadRows(first, count, out); !s.ok()) return s;
  const uint64_t cols = columns();
  std::vector<float> original(out, out + count * cols);
  for (const LowRankUpdate& u : updates_) u.ApplyRows(first, count, out);
  for (uint64_t r = 0; r < count; ++r) {
    double signal = 0, change = 0;
    for (uint64_t c = 0; c < cols; ++c) {
      const double w = original[r * cols + c], d = static_cast<double>(out[r * cols + c]) - w;
      signal += w * w;
      change += d * d;
    }
    row_signal_[first + r] = signal;
    row_change_[first + r] = change;
  }
  return absl::OkStatus();
}

double MergedWeightReader::relative_update() const {
  double signal = 0, change = 0;
  for (size_t r = 0; r < row_signal_.size(); ++r) {
    signal += row_signal_[r];
    change += row_change_[r];
  }
  if (change == 0) return 0;
  return signal == 0 ? std::numeric_limits<double>::infinity() : std::sqrt(change / signal);
}

namespace {

// The layout writer reports progress in its own units; the merge job counts base bytes, so the
// writer gets a context that only relays stop requests.
class StopOnlyContext final : public JobContext {
 public:
  explicit StopOnlyContext(const JobContext& inner) : inner_(inner) {}
  bool stop_requested() const override { return inner_.stop_requested(); }
  void ReportProgress(const v1::Progress&) override {}
  void Warn(absl::string_view, absl::string_view, absl::string_view) override {}
  void Log(absl::string_view) override {}

 private:
  const JobContext& inner_;
};

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> RequantizeMergedGroup(const MergeTensor& t,
                                                                         std::vector<LowRankUpdate> updates,
                                                                         const RandomAccessObject& file,
                                                                         RateLimiter& pace, const JobContext& context,
                                                                         MergedTensorFigures* figures) {
  const MergedWeightReader merged(*t.reader, std::move(updates));
  LayoutTensorPlan plan = t.layout_plan;
  plan.reader = &merged;
  std::string bytes;
  StopOnlyContext quiet(context);
  ProgressTracker ignored(quiet, 0, 0);
  PipelinedWriter out(std::make_unique<MemoryWriter>(&bytes), 32 << 20);
  if (absl::Status s = WriteQuantizedWeight(*t.layout, plan, file, out, ignored, pace, quiet, figures->written);
      !s.ok()) {
    out.Abort();
    return Annotate(s, absl::StrCat("requantizing '", t.reader->name(), "'"));
  }
  if (absl::Status s = out.Commit(); !s.ok()) return s;
  figures->relative_update = merged.relative_update();
  std::map<std::string, std::string> tensors;
  uint64_t at = 0;
  for (const SafetensorsEntry& e : plan.outputs) {
    if (at + e.size_bytes > bytes.size()) {
      return MakeError(absl::StatusCode::kInternal, "INTERNAL",
                       absl::StrCat("requantized '", e.name, "' is shorter than planned"));
    }
    tensors[e.name] = bytes.substr(at, e.size_bytes);
    at += e.size_bytes;
  }
  return tensors;
}

}  // namespace modelsmith
