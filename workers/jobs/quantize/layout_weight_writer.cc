#include "workers/jobs/quantize/layout_weight_writer.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/pool/parallel_for.h"
#include "workers/storage/pipelined_writer.h"
#include "workers/quant/bitsandbytes.h"
#include "workers/quant/chatglm.h"
#include "workers/quant/half.h"
#include "workers/quant/quantize_rows.h"
#include "workers/quant/quanto.h"

namespace modelsmith {
namespace {

constexpr uint64_t kChunkElements = 4 << 20;
constexpr uint64_t kPartElements = 256 << 10;

// A float tensor's values as bytes of its own dtype (scales, shifts, 0-d scalars).
std::string StoredBytes(StoredFloat type, const std::vector<float>& values) {
  std::string out;
  for (float v : values) {
    if (type == StoredFloat::kF32) {
      out.append(reinterpret_cast<const char*>(&v), 4);
    } else {
      const uint16_t bits = type == StoredFloat::kF16 ? Fp32ToFp16(v) : Fp32ToBf16(v);
      out.append(reinterpret_cast<const char*>(&bits), 2);
    }
  }
  return out;
}

template <typename T>
std::string RawBytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// Per-thread buffers, grown as needed and reused across parts and tensors.
struct Scratch {
  std::vector<std::byte> bytes;
  std::vector<float> values, high_values, rounded, back;
  std::vector<uint8_t> low_codes, high_codes;
};

template <typename T>
T* Grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Reads elements [first, first + count) of a float tensor as F32 into `out`.
absl::Status ReadValues(const RandomAccessObject& file, const LayoutTensorPlan& t, uint64_t first, uint64_t count,
                        std::vector<std::byte>& bytes, std::vector<float>& out) {
  if (t.reader != nullptr) {
    if (absl::Status s = t.reader->ReadElements(first, count, Grow(out, count)); !s.ok()) {
      return Annotate(s, absl::StrCat("reading back '", t.source->name, "'"));
    }
    return absl::OkStatus();
  }
  const uint64_t width = t.stored == StoredFloat::kF32 ? 4 : 2;
  if (absl::Status s = file.ReadAt(t.source->data_offset + first * width, count * width, Grow(bytes, count * width));
      !s.ok()) {
    return Annotate(s, absl::StrCat("reading tensor '", t.source->name, "'"));
  }
  const GgmlType type = t.stored == StoredFloat::kF32   ? GgmlType::kF32
                        : t.stored == StoredFloat::kF16 ? GgmlType::kF16
                                                        : GgmlType::kBF16;
  DecodeRows(type, reinterpret_cast<const uint8_t*>(bytes.data()), 1, count, Grow(out, count));
  return absl::OkStatus();
}

// Streams one quantized weight: its data tensor to `out` chunk by chunk, then its companions.
// Each chunk is cut into parts of about kPartElements that the compute threads take in any
// order; a part writes its own slice of the chunk's data and of the scale arrays, and its own
// quality figures, merged in part order: nothing depends on the number of threads.
class WeightQuantizer {
 public:
  WeightQuantizer(const LayoutSpec& spec, const LayoutTensorPlan& t, const RandomAccessObject& file,
                  PipelinedWriter& out, ProgressTracker& tracker, RateLimiter& pace, const JobContext& context)
      : spec_(spec),
        t_(t),
        file_(file),
        out_(out),
        tracker_(tracker),
        pace_(pace),
        context_(context),
        scratch_(ComputeThreads()) {}

  absl::Status Run(QualityStats& quality) {
    absl::StatusOr<std::vector<std::string>> companions;
    switch (spec_.layout) {
      case Layout::kBnbInt8:
      case Layout::kQuantoInt8:
      case Layout::kChatglmInt8:
      case Layout::kChatglmInt4: companions = RowWise(quality); break;
      case Layout::kBnbNf4:
      case Layout::kBnbFp4: companions = Blockwise4(quality); break;
      case Layout::kQuantoInt4: companions = QuantoInt4(quality); break;
    }
    if (!companions.ok()) return companions.status();
    for (size_t i = 0; i < companions->size(); ++i) {
      const std::string& bytes = (*companions)[i];
      if (bytes.size() != t_.outputs[i + 1].size_bytes) {
        return MakeError(absl::StatusCode::kInternal, "INTERNAL",
                         absl::StrCat("'", t_.outputs[i + 1].name, "' has ", bytes.size(), " bytes, planned ",
                                      t_.outputs[i + 1].size_bytes));
      }
      if (absl::Status s = Append(bytes); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  using PartWork = std::function<absl::Status(size_t part, Scratch& scratch, QualityStats& quality)>;

  absl::Status Append(absl::string_view bytes) {
    return out_.Append({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
  }

  // Runs `work` for every part on the compute threads, then merges the figures in part order.
  absl::Status RunParts(size_t parts, QualityStats& quality, const PartWork& work) {
    std::vector<QualityStats> part_quality(parts);
    std::vector<absl::Status> status(parts);
    ParallelFor(parts, scratch_.size(),
                [&](size_t part, size_t worker) { status[part] = work(part, scratch_[worker], part_quality[part]); });
    for (size_t part = 0; part < parts; ++part) {
      if (!status[part].ok()) return status[part];
      quality.Merge(part_quality[part]);
    }
    return absl::OkStatus();
  }

  // Hands a finished chunk to the writer thread and accounts for the input it came from.
  absl::Status Finish(std::shared_ptr<std::byte[]> data, size_t size, uint64_t elements_done) {
    if (absl::Status s = out_.AppendShared(std::move(data), size); !s.ok()) return s;
    const uint64_t bytes = elements_done * (t_.stored == StoredFloat::kF32 ? 4 : 2);
    tracker_.AddBytes(bytes);
    pace_.Account(bytes, [&] { return context_.stop_requested(); });
    return StopStatus(context_);
  }

  // bnb int8, quanto int8, ChatGLM: one scale per row.
  absl::StatusOr<std::vector<std::string>> RowWise(QualityStats& quality) {
    const uint64_t cols = t_.cols;
    const uint64_t rows_per_part = std::max<uint64_t>(1, kPartElements / cols);
    const uint64_t rows_per_chunk = std::max<uint64_t>(1, kChunkElements / cols / rows_per_part) * rows_per_part;
    const bool int4 = spec_.layout == Layout::kChatglmInt4;
    const uint64_t row_bytes = int4 ? cols / 2 : cols;
    std::vector<float> scales(t_.rows);
    std::vector<uint16_t> half_scales(t_.rows);
    for (uint64_t row = 0; row < t_.rows; row += rows_per_chunk) {
      const uint64_t rows = std::min(rows_per_chunk, t_.rows - row);
      std::shared_ptr<std::byte[]> chunk = out_.TakeBuffer(rows * row_bytes);
      int8_t* codes = reinterpret_cast<int8_t*>(chunk.get());
      const size_t parts = (rows + rows_per_part - 1) / rows_per_part;
      absl::Status s = RunParts(parts, quality, [&](size_t part, Scratch& w, QualityStats& q) -> absl::Status {
        const uint64_t first = row + part * rows_per_part;
        const uint64_t count = std::min(rows_per_part, row + rows - first);
        if (absl::Status r = ReadValues(file_, t_, first * cols, count * cols, w.bytes, w.values); !r.ok()) return r;
        float* back = Grow(w.back, count * cols);
        float* rounded = Grow(w.rounded, cols);
        for (uint64_t r = 0; r < count; ++r) {
          const float* x = w.values.data() + r * cols;
          int8_t* c = codes + (first - row + r) * row_bytes;
          float* y = back + r * cols;
          switch (spec_.layout) {
            case Layout::kBnbInt8: {
              // Int8Params casts the weight to FP16 before quantizing (a no-op for FP16 weights).
              const float* half = x;
              if (t_.stored != StoredFloat::kF16) {
                for (uint64_t i = 0; i < cols; ++i) rounded[i] = RoundTo(StoredFloat::kF16, x[i]);
                half = rounded;
              }
              scales[first + r] = BnbInt8QuantizeRow(half, cols, c);
              BnbInt8DequantizeRow(c, cols, scales[first + r], y);
              break;
            }
            case Layout::kQuantoInt8:
              scales[first + r] = QuantoInt8QuantizeRow(t_.stored, x, cols, c);
              QuantoInt8DequantizeRow(t_.stored, c, cols, scales[first + r], y);
              break;
            default: {
              const int bits = int4 ? 4 : 8;
              half_scales[first + r] = ChatglmQuantizeRow(bits, x, cols, c);
              ChatglmDequantizeRow(bits, c, cols, half_scales[first + r], y);
            }
          }
        }
        q.Add(w.values.data(), back, count * cols);
        return absl::OkStatus();
      });
      if (!s.ok()) return s;
      if (absl::Status f = Finish(std::move(chunk), rows * row_bytes, rows * cols); !f.ok()) return f;
    }
    switch (spec_.layout) {
      case Layout::kBnbInt8: return std::vector<std::string>{RawBytes(scales), std::string(1, '\0')};
      case Layout::kQuantoInt8: {
        const std::string one = StoredBytes(t_.stored, {1.0f});
        return std::vector<std::string>{StoredBytes(t_.stored, scales), one, one};
      }
      default: return std::vector<std::string>{RawBytes(half_scales)};
    }
  }

  // bitsandbytes NF4 / FP4 over the flattened tensor.
  absl::StatusOr<std::vector<std::string>> Blockwise4(QualityStats& quality) {
    const Bnb4Type type = spec_.layout == Layout::kBnbNf4 ? Bnb4Type::kNf4 : Bnb4Type::kFp4;
    const uint64_t n = t_.rows * t_.cols;
    const uint64_t block = spec_.bnb_block;
    const uint64_t part_elements = std::max<uint64_t>(1, kPartElements / block) * block;
    const uint64_t chunk_elements = std::max<uint64_t>(1, kChunkElements / part_elements) * part_elements;
    std::vector<float> absmax((n + block - 1) / block);
    for (uint64_t start = 0; start < n; start += chunk_elements) {
      const uint64_t count = std::min(chunk_elements, n - start);
      std::shared_ptr<std::byte[]> chunk = out_.TakeBuffer((count + 1) / 2);
      uint8_t* packed = reinterpret_cast<uint8_t*>(chunk.get());
      const size_t parts = (count + part_elements - 1) / part_elements;
      absl::Status s = RunParts(parts, quality, [&](size_t part, Scratch& w, QualityStats& q) -> absl::Status {
        const uint64_t first = start + part * part_elements;  // a multiple of the (even) block
        const uint64_t elements = std::min(part_elements, start + count - first);
        if (absl::Status r = ReadValues(file_, t_, first, elements, w.bytes, w.values); !r.ok()) return r;
        uint8_t* codes = packed + (first - start) / 2;
        float* part_absmax = absmax.data() + first / block;
        Bnb4Quantize(type, w.values.data(), elements, block, codes, part_absmax);
        float* back = Grow(w.back, elements);
        Bnb4Dequantize(type, codes, elements, block, part_absmax, back);
        q.Add(w.values.data(), back, elements);
        return absl::OkStatus();
      });
      if (!s.ok()) return s;
      if (absl::Status f = Finish(std::move(chunk), (count + 1) / 2, count); !f.ok()) return f;
    }
    const std::array<float, 16>& map = Bnb4QuantMap(type);
    const std::string quant_map(reinterpret_cast<const char*>(map.data()), sizeof(float) * 16);
    const uint64_t state_bytes = t_.outputs.back().size_bytes;
    if (!spec_.double_quant) {
      return std::vector<std::string>{RawBytes(absmax), quant_map, QuantStateJson(spec_, t_, 0.0f)};
    }
    const NestedAbsmax nested = BnbNestAbsmax(absmax);
    std::string state = QuantStateJson(spec_, t_, nested.offset);
    state.insert(state.size() - 1, std::string(state_bytes - std::min<uint64_t>(state_bytes, state.size()), ' '));
    const std::array<float, 256>& dynamic = BnbDynamicMap();
    return std::vector<std::string>{RawBytes(nested.codes), quant_map, RawBytes(nested.nested_absmax),
                                    std::string(reinterpret_cast<const char*>(dynamic.data()), sizeof(float) * 256),
                                    state};
  }

  // optimum-quanto qint4: grouped rows r and r + R share a byte row, so each part of byte rows
  // reads two ranges of the weight.
  absl::StatusOr<std::vector<std::string>> QuantoInt4(QualityStats& quality) {
    const uint64_t g = t_.group;
    const uint64_t groups = t_.rows * t_.cols / g;
    const uint64_t half = (groups + 1) / 2;
    const uint64_t rows_per_part = std::max<uint64_t>(1, kPartElements / 2 / g);
    const uint64_t rows_per_chunk = std::max<uint64_t>(1, kChunkElements / 2 / g / rows_per_part) * rows_per_part;
    std::vector<float> scales(groups), shifts(groups);
    for (uint64_t row = 0; row < half; row += rows_per_chunk) {
      const uint64_t rows = std::min(rows_per_chunk, half - row);
      std::shared_ptr<std::byte[]> chunk = out_.TakeBuffer(rows * g);
      uint8_t* packed = reinterpret_cast<uint8_t*>(chunk.get());
      const size_t parts = (rows + rows_per_part - 1) / rows_per_part;
      uint64_t elements_done = 0;
      std::vector<uint64_t> part_elements(parts);
      absl::Status s = RunParts(parts, quality, [&](size_t part, Scratch& w, QualityStats& q) -> absl::Status {
        const uint64_t first = row + part * rows_per_part;
        const uint64_t count = std::min(rows_per_part, row + rows - first);
        const uint64_t high_count = std::min(count, groups > first + half ? groups - (first + half) : 0);
        if (absl::Status r = ReadValues(file_, t_, first * g, count * g, w.bytes, w.values); !r.ok()) return r;
        if (high_count > 0) {
          if (absl::Status r = ReadValues(file_, t_, (first + half) * g, high_count * g, w.bytes, w.high_values);
              !r.ok()) {
            return r;
          }
        }
        uint8_t* low = Grow(w.low_codes, count * g);
        uint8_t* high = Grow(w.high_codes, count * g);
        float* back = Grow(w.back, g);
        for (uint64_t i = 0; i < count; ++i) {
          const uint64_t l = first + i;
          QuantoInt4QuantizeGroup(t_.stored, w.values.data() + i * g, g, low + i * g, &scales[l], &shifts[l]);
          QuantoInt4DequantizeGroup(t_.stored, low + i * g, g, scales[l], shifts[l], back);
          q.Add(w.values.data() + i * g, back, g);
          const uint8_t* high_row = nullptr;
          if (i < high_count) {
            const uint64_t h = first + half + i;
            QuantoInt4QuantizeGroup(t_.stored, w.high_values.data() + i * g, g, high + i * g, &scales[h], &shifts[h]);
            QuantoInt4DequantizeGroup(t_.stored, high + i * g, g, scales[h], shifts[h], back);
            q.Add(w.high_values.data() + i * g, back, g);
            high_row = high + i * g;
          }
          QuantoPackRowPair(low + i * g, high_row, g, packed + (l - row) * g);
        }
        part_elements[part] = (count + high_count) * g;
        return absl::OkStatus();
      });
      if (!s.ok()) return s;
      for (uint64_t e : part_elements) elements_done += e;
      if (absl::Status f = Finish(std::move(chunk), rows * g, elements_done); !f.ok()) return f;
    }
    const std::string one = StoredBytes(t_.stored, {1.0f});
    return std::vector<std::string>{StoredBytes(t_.stored, scales), StoredBytes(t_.stored, shifts), one, one};
  }

  const LayoutSpec& spec_;
  const LayoutTensorPlan& t_;
  const RandomAccessObject& file_;
  PipelinedWriter& out_;
  ProgressTracker& tracker_;
  RateLimiter& pace_;
  const JobContext& context_;
  std::vector<Scratch> scratch_;
};

}  // namespace

absl::Status WriteDequantizedWeight(const LayoutTensorPlan& t, const RandomAccessObject& file, PipelinedWriter& out,
                                    ProgressTracker& tracker, RateLimiter& pace, const JobContext& context,
                                    QualityStats& quality) {
  const GgmlType type = t.stored == StoredFloat::kF32   ? GgmlType::kF32
                        : t.stored == StoredFloat::kF16 ? GgmlType::kF16
                                                        : GgmlType::kBF16;
  const uint64_t width = t.stored == StoredFloat::kF32 ? 4 : 2;
  const uint64_t n = t.rows * t.cols;
  std::vector<std::byte> unused;
  std::vector<float> values, back;
  for (uint64_t first = 0; first < n; first += kChunkElements) {
    const uint64_t count = std::min<uint64_t>(kChunkElements, n - first);
    if (absl::Status s = ReadValues(file, t, first, count, unused, values); !s.ok()) return s;
    std::shared_ptr<std::byte[]> chunk = out.TakeBuffer(count * width);
    EncodeRows(type, values.data(), 1, count, reinterpret_cast<uint8_t*>(chunk.get()));
    DecodeRows(type, reinterpret_cast<const uint8_t*>(chunk.get()), 1, count, Grow(back, count));
    quality.Add(values.data(), back.data(), count);
    if (absl::Status s = out.AppendShared(std::move(chunk), count * width); !s.ok()) return s;
    tracker.AddBytes(count * width);
    pace.Account(count * width, [&] { return context.stop_requested(); });
    if (absl::Status s = StopStatus(context); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status WriteQuantizedWeight(const LayoutSpec& spec, const LayoutTensorPlan& t, const RandomAccessObject& file,
                                  PipelinedWriter& out, ProgressTracker& tracker, RateLimiter& pace,
                                  const JobContext& context, QualityStats& quality) {
  return WeightQuantizer(spec, t, file, out, tracker, pace, context).Run(quality);
}

}  // namespace modelsmith
