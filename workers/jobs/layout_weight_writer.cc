#include "workers/jobs/layout_weight_writer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/jobs/quantize_report.h"
#include "workers/quant/bitsandbytes.h"
#include "workers/quant/chatglm.h"
#include "workers/quant/half.h"
#include "workers/quant/quantize_rows.h"
#include "workers/quant/quanto.h"

namespace modelsmith {
namespace {

constexpr uint64_t kChunkElements = 4 << 20;

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

// Reads elements [first, first + count) of a float tensor as F32.
absl::Status ReadValues(const RandomAccessObject& file, const LayoutTensorPlan& t, uint64_t first, uint64_t count,
                        std::vector<std::byte>& scratch, std::vector<float>& out) {
  const uint64_t width = t.stored == StoredFloat::kF32 ? 4 : 2;
  scratch.resize(count * width);
  if (absl::Status s = file.ReadAt(t.source->data_offset + first * width, scratch.size(), scratch.data()); !s.ok()) {
    return Annotate(s, absl::StrCat("reading tensor '", t.source->name, "'"));
  }
  out.resize(count);
  const GgmlType type = t.stored == StoredFloat::kF32 ? GgmlType::kF32 : t.stored == StoredFloat::kF16 ? GgmlType::kF16 : GgmlType::kBF16;
  DecodeRows(type, reinterpret_cast<const uint8_t*>(scratch.data()), 1, count, out.data());
  return absl::OkStatus();
}

// Streams one quantized weight: its data tensor to `out` chunk by chunk, then its companions.
class WeightQuantizer {
 public:
  WeightQuantizer(const LayoutSpec& spec, const LayoutTensorPlan& t, const RandomAccessObject& file, ObjectWriter& out,
                  ProgressTracker& tracker, RateLimiter& pace, const JobContext& context)
      : spec_(spec), t_(t), file_(file), out_(out), tracker_(tracker), pace_(pace), context_(context) {}

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
                         absl::StrCat("'", t_.outputs[i + 1].name, "' has ", bytes.size(), " bytes, planned ", t_.outputs[i + 1].size_bytes));
      }
      if (absl::Status s = Append(bytes); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Append(absl::string_view bytes) {
    return out_.Append({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
  }
  absl::Status Step(uint64_t elements_done) {
    const uint64_t bytes = elements_done * (t_.stored == StoredFloat::kF32 ? 4 : 2);
    tracker_.AddBytes(bytes);
    pace_.Account(bytes, [&] { return context_.stop_requested(); });
    return StopStatus(context_);
  }

  // bnb int8, quanto int8, ChatGLM: one scale per row.
  absl::StatusOr<std::vector<std::string>> RowWise(QualityStats& quality) {
    const uint64_t rows_per_chunk = std::max<uint64_t>(1, kChunkElements / t_.cols);
    std::vector<float> scales(t_.rows);
    std::vector<uint16_t> half_scales(t_.rows);
    const bool int4 = spec_.layout == Layout::kChatglmInt4;
    const uint64_t row_bytes = int4 ? t_.cols / 2 : t_.cols;
    std::vector<int8_t> codes;
    std::vector<float> values, rounded(t_.cols), back;
    for (uint64_t row = 0; row < t_.rows; row += rows_per_chunk) {
      const uint64_t rows = std::min(rows_per_chunk, t_.rows - row);
      if (absl::Status s = ReadValues(file_, t_, row * t_.cols, rows * t_.cols, scratch_, values); !s.ok()) return s;
      codes.resize(rows * row_bytes);
      back.resize(values.size());
      for (uint64_t r = 0; r < rows; ++r) {
        const float* x = values.data() + r * t_.cols;
        int8_t* q = codes.data() + r * row_bytes;
        float* y = back.data() + r * t_.cols;
        switch (spec_.layout) {
          case Layout::kBnbInt8:
            // Int8Params casts the weight to FP16 before quantizing.
            for (uint64_t i = 0; i < t_.cols; ++i) rounded[i] = RoundTo(StoredFloat::kF16, x[i]);
            scales[row + r] = BnbInt8QuantizeRow(rounded.data(), t_.cols, q);
            BnbInt8DequantizeRow(q, t_.cols, scales[row + r], y);
            break;
          case Layout::kQuantoInt8:
            scales[row + r] = QuantoInt8QuantizeRow(t_.stored, x, t_.cols, q);
            QuantoInt8DequantizeRow(t_.stored, q, t_.cols, scales[row + r], y);
            break;
          default: {
            const int bits = int4 ? 4 : 8;
            half_scales[row + r] = ChatglmQuantizeRow(bits, x, t_.cols, q);
            ChatglmDequantizeRow(bits, q, t_.cols, half_scales[row + r], y);
          }
        }
      }
      quality.Add(values.data(), back.data(), values.size());
      if (absl::Status s = Append({reinterpret_cast<const char*>(codes.data()), codes.size()}); !s.ok()) return s;
      if (absl::Status s = Step(values.size()); !s.ok()) return s;
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
    const uint64_t piece_elements = std::max<uint64_t>(1, kChunkElements / block) * block;
    std::vector<float> absmax((n + block - 1) / block), values, back;
    std::vector<uint8_t> packed;
    for (uint64_t first = 0; first < n; first += piece_elements) {
      const uint64_t count = std::min(piece_elements, n - first);
      if (absl::Status s = ReadValues(file_, t_, first, count, scratch_, values); !s.ok()) return s;
      packed.resize((count + 1) / 2);
      float* piece_absmax = absmax.data() + first / block;
      Bnb4Quantize(type, values.data(), count, block, packed.data(), piece_absmax);
      back.resize(count);
      Bnb4Dequantize(type, packed.data(), count, block, piece_absmax, back.data());
      quality.Add(values.data(), back.data(), count);
      if (absl::Status s = Append({reinterpret_cast<const char*>(packed.data()), packed.size()}); !s.ok()) return s;
      if (absl::Status s = Step(count); !s.ok()) return s;
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
                                    std::string(reinterpret_cast<const char*>(dynamic.data()), sizeof(float) * 256), state};
  }

  // optimum-quanto qint4: grouped rows r and r + R share a byte row, so each chunk of byte rows
  // reads two ranges of the weight.
  absl::StatusOr<std::vector<std::string>> QuantoInt4(QualityStats& quality) {
    const uint64_t g = t_.group;
    const uint64_t groups = t_.rows * t_.cols / g;
    const uint64_t half = (groups + 1) / 2;
    const uint64_t rows_per_chunk = std::max<uint64_t>(1, kChunkElements / 2 / g);
    std::vector<float> scales(groups), shifts(groups), low_values, high_values, back(g);
    std::vector<uint8_t> low_codes, high_codes, packed;
    for (uint64_t r = 0; r < half; r += rows_per_chunk) {
      const uint64_t rows = std::min(rows_per_chunk, half - r);
      const uint64_t high_rows = std::min(rows, groups > r + half ? groups - (r + half) : 0);
      if (absl::Status s = ReadValues(file_, t_, r * g, rows * g, scratch_, low_values); !s.ok()) return s;
      high_values.clear();
      if (high_rows > 0) {
        if (absl::Status s = ReadValues(file_, t_, (r + half) * g, high_rows * g, scratch_, high_values); !s.ok()) return s;
      }
      low_codes.resize(rows * g);
      high_codes.resize(high_rows * g);
      packed.resize(rows * g);
      for (uint64_t i = 0; i < rows; ++i) {
        QuantoInt4QuantizeGroup(t_.stored, low_values.data() + i * g, g, low_codes.data() + i * g, &scales[r + i], &shifts[r + i]);
        QuantoInt4DequantizeGroup(t_.stored, low_codes.data() + i * g, g, scales[r + i], shifts[r + i], back.data());
        quality.Add(low_values.data() + i * g, back.data(), g);
        const uint8_t* high = nullptr;
        if (i < high_rows) {
          const uint64_t h = r + half + i;
          QuantoInt4QuantizeGroup(t_.stored, high_values.data() + i * g, g, high_codes.data() + i * g, &scales[h], &shifts[h]);
          QuantoInt4DequantizeGroup(t_.stored, high_codes.data() + i * g, g, scales[h], shifts[h], back.data());
          quality.Add(high_values.data() + i * g, back.data(), g);
          high = high_codes.data() + i * g;
        }
        QuantoPackRowPair(low_codes.data() + i * g, high, g, packed.data() + i * g);
      }
      if (absl::Status s = Append({reinterpret_cast<const char*>(packed.data()), packed.size()}); !s.ok()) return s;
      if (absl::Status s = Step((rows + high_rows) * g); !s.ok()) return s;
    }
    const std::string one = StoredBytes(t_.stored, {1.0f});
    return std::vector<std::string>{StoredBytes(t_.stored, scales), StoredBytes(t_.stored, shifts), one, one};
  }

  const LayoutSpec& spec_;
  const LayoutTensorPlan& t_;
  const RandomAccessObject& file_;
  ObjectWriter& out_;
  ProgressTracker& tracker_;
  RateLimiter& pace_;
  const JobContext& context_;
  std::vector<std::byte> scratch_;
};

}  // namespace

absl::Status WriteQuantizedWeight(const LayoutSpec& spec, const LayoutTensorPlan& t, const RandomAccessObject& file,
                                  ObjectWriter& out, ProgressTracker& tracker, RateLimiter& pace,
                                  const JobContext& context, QualityStats& quality) {
  return WeightQuantizer(spec, t, file, out, tracker, pace, context).Run(quality);
}

}  // namespace modelsmith
