#include "workers/formats/quantized_weight_reader.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "workers/common/error.h"
#include "workers/quant/bitsandbytes.h"
#include "workers/quant/chatglm.h"
#include "workers/quant/quanto.h"

namespace modelsmith {
namespace {

constexpr uint64_t kMaxCompanionBytes = 256 << 20;  // scales, absmax, maps, JSON

absl::Status Unreadable(const std::string& tensor, absl::string_view why) {
  return MakeError(absl::StatusCode::kFailedPrecondition, "REQUANTIZE_UNSUPPORTED",
                   absl::StrCat("cannot dequantize '", tensor, "': ", why), {{"tensor", tensor}});
}

absl::Status Inconsistent(const std::string& tensor, absl::string_view why) {
  return MakeError(absl::StatusCode::kInvalidArgument, "QUANTIZED_LAYOUT_INVALID",
                   absl::StrCat("'", tensor, "': ", why), {{"tensor", tensor}});
}

std::optional<StoredFloat> FloatTypeOf(DType d) {
  switch (d) {
    case DType::kF32: return StoredFloat::kF32;
    case DType::kF16: return StoredFloat::kF16;
    case DType::kBF16: return StoredFloat::kBF16;
    default: return std::nullopt;
  }
}

float ToFloat(DType d, const uint8_t* p) {
  switch (d) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case DType::kF16: return LoadFp16(p);
    case DType::kBF16: {
      uint16_t b;
      std::memcpy(&b, p, 2);
      return Bf16ToFp32(b);
    }
    case DType::kF8E4M3: return Fp8E4M3ToFp32(*p);
    case DType::kF8E5M2: return Fp8E5M2ToFp32(*p);
    default: return NAN;
  }
}

uint64_t WidthOf(DType d) {
  switch (d) {
    case DType::kF32: return 4;
    case DType::kF16:
    case DType::kBF16: return 2;
    default: return 1;
  }
}

// The tensors of one model by name, and whole-tensor reads of the small ones.
class Tensors {
 public:
  // Keeps pointers to the tensor table and the file objects, which stay put when the ModelView
  // itself is moved.
  explicit Tensors(const ModelView& model) {
    for (const TensorInfo& t : model.tensors) by_name_[t.name] = &t;
    for (const ModelFile& f : model.files) files_.push_back(f.object.get());
  }
  const TensorInfo* Find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }
  const RandomAccessObject& FileOf(const TensorInfo& t) const { return *files_[t.file_index]; }

  absl::StatusOr<std::string> Bytes(const TensorInfo& t) const {
    if (t.size_bytes > kMaxCompanionBytes) return Inconsistent(t.name, "a companion tensor over 256 MiB");
    std::string bytes(t.size_bytes, '\0');
    if (absl::Status s = FileOf(t).ReadAt(t.data_offset, bytes.size(), reinterpret_cast<std::byte*>(bytes.data()));
        !s.ok()) {
      return s;
    }
    return bytes;
  }

  // A float tensor (any float dtype) as FP32 values.
  absl::StatusOr<std::vector<float>> Floats(const TensorInfo& t) const {
    if (!FloatTypeOf(t.dtype))
      return Inconsistent(t.name, absl::StrCat("expected a float tensor, found ", DTypeName(t.dtype)));
    absl::StatusOr<std::string> bytes = Bytes(t);
    if (!bytes.ok()) return bytes.status();
    const uint64_t width = WidthOf(t.dtype);
    std::vector<float> out(bytes->size() / width);
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = ToFloat(t.dtype, reinterpret_cast<const uint8_t*>(bytes->data()) + i * width);
    return out;
  }

  absl::StatusOr<const TensorInfo*> Require(const std::string& name, const std::string& group) const {
    const TensorInfo* t = Find(name);
    if (t == nullptr) return Inconsistent(group, absl::StrCat("its tensor '", name, "' is missing"));
    return t;
  }

 private:
  std::map<std::string, const TensorInfo*> by_name_;
  std::vector<const RandomAccessObject*> files_;
};

// Reads `count` rows of `row_bytes` bytes from a stored tensor.
absl::Status ReadRawRows(const Tensors& tensors, const TensorInfo& t, uint64_t row_bytes, uint64_t first,
                         uint64_t count, std::string& out) {
  out.resize(count * row_bytes);
  return tensors.FileOf(t).ReadAt(t.data_offset + first * row_bytes, out.size(),
                                  reinterpret_cast<std::byte*>(out.data()));
}

class BnbInt8Reader final : public QuantizedWeightReader {
 public:
  BnbInt8Reader(std::shared_ptr<const Tensors> tensors, const TensorInfo& weight, std::vector<float> scb)
      : tensors_(std::move(tensors)), weight_(weight), scb_(std::move(scb)) {}
  absl::Status ReadRows(uint64_t first, uint64_t count, float* out) const override {
    const uint64_t cols = columns();
    std::string raw;
    if (absl::Status s = ReadRawRows(*tensors_, weight_, cols, first, count, raw); !s.ok()) return s;
    for (uint64_t r = 0; r < count; ++r) {
      BnbInt8DequantizeRow(reinterpret_cast<const int8_t*>(raw.data()) + r * cols, cols, scb_[first + r],
                           out + r * cols);
    }
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<const Tensors> tensors_;
  const TensorInfo& weight_;
  std::vector<float> scb_;
};

class Bnb4Reader final : public QuantizedWeightReader {
 public:
  Bnb4Reader(std::shared_ptr<const Tensors> tensors, const TensorInfo& packed, std::vector<float> absmax,
             std::vector<float> map, uint64_t block)
      : tensors_(std::move(tensors)),
        packed_(packed),
        absmax_(std::move(absmax)),
        map_(std::move(map)),
        block_(block) {}
  absl::Status ReadRows(uint64_t first, uint64_t count, float* out) const override {
    const uint64_t cols = columns();
    const uint64_t begin = first * cols, end = (first + count) * cols;
    const uint64_t byte_begin = begin / 2, byte_end = (end + 1) / 2;
    std::string raw(byte_end - byte_begin, '\0');
    if (absl::Status s = tensors_->FileOf(packed_).ReadAt(packed_.data_offset + byte_begin, raw.size(),
                                                          reinterpret_cast<std::byte*>(raw.data()));
        !s.ok()) {
      return s;
    }
    for (uint64_t i = begin; i < end; ++i) {
      const uint8_t byte = static_cast<uint8_t>(raw[i / 2 - byte_begin]);
      const uint8_t code = i % 2 == 0 ? byte >> 4 : byte & 0x0F;
      out[i - begin] = map_[code] * absmax_[i / block_];
    }
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<const Tensors> tensors_;
  const TensorInfo& packed_;
  std::vector<float> absmax_, map_;
  uint64_t block_;
};

// quanto qint8 / qfloat8 and ChatGLM: one scale per row, values q (int8, fp8 or int4 nibbles).
class RowScaledReader final : public QuantizedWeightReader {
 public:
  enum class Codes { kInt8, kFp8E4M3, kFp8E5M2, kNibbles };
  RowScaledReader(std::shared_ptr<const Tensors> tensors, const TensorInfo& data, Codes codes,
                  std::vector<float> scales, StoredFloat scale_type)
      : tensors_(std::move(tensors)), data_(data), codes_(codes), scales_(std::move(scales)), scale_type_(scale_type) {}
  absl::Status ReadRows(uint64_t first, uint64_t count, float* out) const override {
    const uint64_t cols = columns();
    const uint64_t row_bytes = codes_ == Codes::kNibbles ? cols / 2 : cols;
    std::string raw;
    if (absl::Status s = ReadRawRows(*tensors_, data_, row_bytes, first, count, raw); !s.ok()) return s;
    for (uint64_t r = 0; r < count; ++r) {
      const auto* q = reinterpret_cast<const uint8_t*>(raw.data()) + r * row_bytes;
      const float scale = scales_[first + r];
      float* y = out + r * cols;
      for (uint64_t i = 0; i < cols; ++i) {
        float v = 0;
        switch (codes_) {
          case Codes::kInt8: v = static_cast<int8_t>(q[i]); break;
          case Codes::kFp8E4M3: v = Fp8E4M3ToFp32(q[i]); break;
          case Codes::kFp8E5M2: v = Fp8E5M2ToFp32(q[i]); break;
          case Codes::kNibbles: {
            const int8_t byte = static_cast<int8_t>(q[i / 2]);
            v = i % 2 == 0 ? byte >> 4 : static_cast<int8_t>(static_cast<uint8_t>(byte) << 4) >> 4;
            break;
          }
        }
        y[i] = RoundTo(scale_type_, v * scale);
      }
    }
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<const Tensors> tensors_;
  const TensorInfo& data_;
  Codes codes_;
  std::vector<float> scales_;
  StoredFloat scale_type_;
};

class QuantoInt4Reader final : public QuantizedWeightReader {
 public:
  // `g`: the group length; a weight row is columns() / g consecutive groups.
  QuantoInt4Reader(std::shared_ptr<const Tensors> tensors, const TensorInfo& packed, uint64_t g,
                   std::vector<float> scales, std::vector<float> shifts, StoredFloat type)
      : tensors_(std::move(tensors)),
        packed_(packed),
        g_(g),
        scales_(std::move(scales)),
        shifts_(std::move(shifts)),
        type_(type) {}
  absl::Status ReadRows(uint64_t first, uint64_t count, float* out) const override {
    const uint64_t per_row = columns() / g_;
    const uint64_t half = (scales_.size() + 1) / 2;  // packed along dim 0 of the grouped tensor
    std::string raw;
    std::vector<uint8_t> low(g_), high(g_);
    for (uint64_t group = first * per_row; group < (first + count) * per_row; ++group) {
      const uint64_t byte_row = group < half ? group : group - half;
      if (absl::Status s = ReadRawRows(*tensors_, packed_, g_, byte_row, 1, raw); !s.ok()) return s;
      QuantoUnpackRowPair(reinterpret_cast<const uint8_t*>(raw.data()), g_, low.data(), high.data());
      QuantoInt4DequantizeGroup(type_, group < half ? low.data() : high.data(), g_, scales_[group], shifts_[group],
                                out + (group - first * per_row) * g_);
    }
    return absl::OkStatus();
  }

 private:
  std::shared_ptr<const Tensors> tensors_;
  const TensorInfo& packed_;
  uint64_t g_;
  std::vector<float> scales_, shifts_;
  StoredFloat type_;
};

struct Bnb4Opened {
  std::unique_ptr<QuantizedWeightReader> reader;
  std::vector<uint64_t> shape;
  StoredFloat original;
};

absl::StatusOr<Bnb4Opened> OpenBnb4(std::shared_ptr<const Tensors> table, const QuantizedGroup& group) {
  const Tensors& tensors = *table;
  const std::string w = group.module + ".weight";
  const std::string state_name = group.tensors.back();
  absl::StatusOr<const TensorInfo*> packed = tensors.Require(w, group.module);
  absl::StatusOr<const TensorInfo*> state = tensors.Require(state_name, group.module);
  absl::StatusOr<const TensorInfo*> absmax_t = tensors.Require(w + ".absmax", group.module);
  absl::StatusOr<const TensorInfo*> map_t = tensors.Require(w + ".quant_map", group.module);
  for (const auto* s : {&packed, &state, &absmax_t, &map_t}) {
    if (!s->ok()) return s->status();
  }
  absl::StatusOr<std::string> json_bytes = tensors.Bytes(**state);
  if (!json_bytes.ok()) return json_bytes.status();
  const nlohmann::json qs = nlohmann::json::parse(*json_bytes, nullptr, false);
  if (qs.is_discarded() || !qs.is_object() || !qs.contains("shape") || !qs["shape"].is_array() ||
      !qs.value("blocksize", nlohmann::json()).is_number_unsigned()) {
    return Inconsistent(state_name, "the quant_state JSON lacks shape or blocksize");
  }
  std::vector<uint64_t> shape;
  uint64_t n = 1;
  for (const auto& d : qs["shape"]) {
    if (!d.is_number_unsigned()) return Inconsistent(state_name, "a dimension of 'shape' is not a count");
    shape.push_back(d.get<uint64_t>());
    n *= shape.back();
  }
  const uint64_t block = qs["blocksize"].get<uint64_t>();
  if (block == 0 || (*packed)->size_bytes != (n + 1) / 2) {
    return Inconsistent(w, absl::StrCat("holds ", (*packed)->size_bytes, " bytes for ", n, " values"));
  }
  const uint64_t blocks = (n + block - 1) / block;
  std::vector<float> absmax;
  if ((*absmax_t)->dtype == DType::kU8) {  // nested: codes, nested absmax, nested map, offset
    absl::StatusOr<const TensorInfo*> nested_t = tensors.Require(w + ".nested_absmax", group.module);
    absl::StatusOr<const TensorInfo*> nested_map_t = tensors.Require(w + ".nested_quant_map", group.module);
    if (!nested_t.ok()) return nested_t.status();
    if (!nested_map_t.ok()) return nested_map_t.status();
    absl::StatusOr<std::string> codes = tensors.Bytes(**absmax_t);
    absl::StatusOr<std::vector<float>> nested = tensors.Floats(**nested_t);
    absl::StatusOr<std::vector<float>> nested_map = tensors.Floats(**nested_map_t);
    if (!codes.ok()) return codes.status();
    if (!nested.ok()) return nested.status();
    if (!nested_map.ok()) return nested_map.status();
    const uint64_t nested_block = qs.value("nested_blocksize", uint64_t{kBnbNestedBlock});
    if (codes->size() != blocks || nested_map->size() != 256 || nested_block == 0 ||
        nested->size() != (blocks + nested_block - 1) / nested_block ||
        !qs.value("nested_offset", nlohmann::json()).is_number()) {
      return Inconsistent(w, "the nested absmax tensors do not fit the weight");
    }
    const float offset = qs["nested_offset"].get<float>();
    absmax.resize(blocks);
    for (uint64_t i = 0; i < blocks; ++i) {
      absmax[i] = (*nested_map)[static_cast<uint8_t>((*codes)[i])] * (*nested)[i / nested_block] + offset;
    }
  } else {
    absl::StatusOr<std::vector<float>> plain = tensors.Floats(**absmax_t);
    if (!plain.ok()) return plain.status();
    if (plain->size() != blocks) return Inconsistent(w, "absmax does not have one value per block");
    absmax = *std::move(plain);
  }
  absl::StatusOr<std::vector<float>> map = tensors.Floats(**map_t);
  if (!map.ok()) return map.status();
  if (map->size() != 16) return Inconsistent(w, "quant_map does not have 16 values");
  const std::string dtype = qs.value("dtype", "float16");
  const StoredFloat original = dtype == "bfloat16"  ? StoredFloat::kBF16
                               : dtype == "float32" ? StoredFloat::kF32
                                                    : StoredFloat::kF16;
  return Bnb4Opened{std::make_unique<Bnb4Reader>(table, **packed, std::move(absmax), *std::move(map), block), shape,
                    original};
}

}  // namespace

float Fp8E4M3ToFp32(uint8_t bits) {
  const float sign = bits & 0x80 ? -1.0f : 1.0f;
  const int exponent = (bits >> 3) & 0x0F;
  const int mantissa = bits & 0x07;
  if (exponent == 0x0F && mantissa == 0x07) return NAN;
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -9);  // m/8 * 2^-6
  return sign * std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
}

float Fp8E5M2ToFp32(uint8_t bits) { return Fp16ToFp32(static_cast<uint16_t>(bits << 8)); }

absl::Status QuantizedWeightReader::ReadElements(uint64_t first, uint64_t count, float* out) const {
  const uint64_t cols = columns();
  if (cols == 0 || count == 0) return absl::OkStatus();
  const uint64_t first_row = first / cols, end_row = (first + count + cols - 1) / cols;
  if (first % cols == 0 && count % cols == 0) return ReadRows(first_row, end_row - first_row, out);
  std::vector<float> rows((end_row - first_row) * cols);
  if (absl::Status s = ReadRows(first_row, end_row - first_row, rows.data()); !s.ok()) return s;
  std::copy(rows.begin() + (first - first_row * cols), rows.begin() + (first - first_row * cols + count), out);
  return absl::OkStatus();
}

absl::StatusOr<RequantizeInputs> OpenRequantizeInputs(const ModelView& model,
                                                      const std::optional<nlohmann::json>& config,
                                                      bool allow_requantize,
                                                      const std::map<std::string, std::vector<uint64_t>>& shape_hints,
                                                      bool skip_unreadable) {
  RequantizeInputs inputs;
  if (model.gguf) return inputs;
  const std::optional<int> bits = ChatglmBitsFromConfig(config);
  const std::vector<QuantizedGroup> groups = DetectQuantizedLayouts(model.tensors, bits);
  if (groups.empty()) return inputs;
  if (!allow_requantize) {
    const QuantizedGroup& g = groups.front();
    return MakeError(absl::StatusCode::kFailedPrecondition, "ALREADY_QUANTIZED",
                     absl::StrCat("'", g.module, "' is already quantized (", g.layout, ", tensor '", g.tensors.front(),
                                  "'); quantizing it again loses precision (set allow_requantize to do it anyway)"),
                     {{"tensor", g.tensors.front()}, {"field", "quantize.input"}});
  }
  for (const QuantizedGroup& g : groups) {
    auto hint = shape_hints.find(g.module);
    absl::StatusOr<std::unique_ptr<QuantizedWeightReader>> reader =
        QuantizedWeightReader::Open(model, g, bits, hint == shape_hints.end() ? nullptr : &hint->second);
    if (!reader.ok() && skip_unreadable && reader.status().code() == absl::StatusCode::kFailedPrecondition) {
      inputs.unreadable[g.module] = std::string(reader.status().message());
      continue;
    }
    if (!reader.ok()) return reader.status();
    const QuantizedWeightReader* r = reader->get();
    auto info = std::make_unique<TensorInfo>();
    info->name = r->name();
    info->shape = r->shape();
    info->dtype = r->original_type() == StoredFloat::kF32    ? DType::kF32
                  : r->original_type() == StoredFloat::kBF16 ? DType::kBF16
                                                             : DType::kF16;
    info->size_bytes = StorageBytes(info->dtype, info->shape).value_or(0);
    for (const std::string& name : g.tensors) inputs.group_of[name] = r;
    inputs.info_of[r] = std::move(info);
    inputs.readers.push_back(*std::move(reader));
  }
  return inputs;
}

const TensorInfo* RequantizeInputs::StandIn(const TensorInfo& stored, const QuantizedWeightReader** reader) {
  *reader = nullptr;
  auto it = group_of.find(stored.name);
  if (it == group_of.end()) return &stored;
  if (!placed_.insert(it->second).second) return nullptr;
  *reader = it->second;
  return info_of.at(it->second).get();
}

uint64_t QuantizedWeightReader::columns() const {
  uint64_t c = 1;
  for (size_t i = 1; i < shape_.size(); ++i) c *= shape_[i];
  return c;
}

absl::StatusOr<std::unique_ptr<QuantizedWeightReader>> QuantizedWeightReader::Open(
    const ModelView& model, const QuantizedGroup& group, std::optional<int> chatglm_bits,
    const std::vector<uint64_t>* shape_hint) {
  // Each reader holds its own table of the model's tensors (the model outlives the readers).
  auto table = std::make_shared<const Tensors>(model);
  const Tensors& tensors = *table;
  const std::string& m = group.module;
  const std::string& layout = group.layout;
  std::unique_ptr<QuantizedWeightReader> reader;
  std::vector<uint64_t> shape;
  StoredFloat original = StoredFloat::kF16;

  if (layout == "bnb_int8") {
    absl::StatusOr<const TensorInfo*> w = tensors.Require(m + ".weight", m);
    absl::StatusOr<const TensorInfo*> scb = tensors.Require(m + ".SCB", m);
    if (!w.ok()) return w.status();
    if (!scb.ok()) return scb.status();
    if ((*w)->dtype != DType::kI8 || (*w)->shape.size() != 2)
      return Inconsistent((*w)->name, "expected a 2-D int8 weight");
    absl::StatusOr<std::vector<float>> scales = tensors.Floats(**scb);
    if (!scales.ok()) return scales.status();
    if (scales->size() != (*w)->shape[0]) return Inconsistent((*scb)->name, "SCB does not have one value per row");
    shape = (*w)->shape;
    reader = std::make_unique<BnbInt8Reader>(table, **w, *std::move(scales));
  } else if (layout == "bnb_nf4" || layout == "bnb_fp4") {
    absl::StatusOr<Bnb4Opened> opened = OpenBnb4(table, group);
    if (!opened.ok()) return opened.status();
    reader = std::move(opened->reader);
    shape = std::move(opened->shape);
    original = opened->original;
  } else if (layout == "quanto_qint8" || layout == "quanto_qfloat8" || layout == "quanto_qint4") {
    absl::StatusOr<const TensorInfo*> scale_t = tensors.Require(m + ".weight._scale", m);
    if (!scale_t.ok()) return scale_t.status();
    const std::optional<StoredFloat> type = FloatTypeOf((*scale_t)->dtype);
    absl::StatusOr<std::vector<float>> scales = tensors.Floats(**scale_t);
    if (!type || !scales.ok()) return Inconsistent((*scale_t)->name, "the scale is not a float tensor");
    original = *type;
    if (layout == "quanto_qint4") {
      absl::StatusOr<const TensorInfo*> packed = tensors.Require(m + ".weight._data._data", m);
      absl::StatusOr<const TensorInfo*> shift_t = tensors.Require(m + ".weight._shift", m);
      if (!packed.ok()) return packed.status();
      if (!shift_t.ok()) return shift_t.status();
      absl::StatusOr<std::vector<float>> shifts = tensors.Floats(**shift_t);
      if (!shifts.ok()) return shifts.status();
      const uint64_t groups = scales->size();
      if ((*packed)->shape.size() != 2 || (*packed)->shape[0] != (groups + 1) / 2 || shifts->size() != groups) {
        return Inconsistent((*packed)->name, "the packed data, scale and shift do not fit together");
      }
      // Per channel the groups are the rows. Grouped, the row length is recorded nowhere, and
      // quanto's group sizes (32, 64, 96, 128) are also valid row lengths: refuse rather than guess.
      const uint64_t g = (*packed)->shape[1];
      shape = {groups, g};
      const bool hinted = shape_hint != nullptr && shape_hint->size() >= 2 &&
                          ElementCount(*shape_hint).value_or(0) == groups * g &&
                          ElementCount(*shape_hint).value_or(0) / (*shape_hint)[0] % g == 0;
      if (hinted) {
        shape = *shape_hint;
      } else if (g == 32 || g == 64 || g == 96 || g == 128) {
        return Unreadable(m + ".weight", absl::StrCat("its qint4 groups of ", g, " may be rows or parts of rows; ",
                                                      "the weight's shape is not recorded in the checkpoint"));
      }
      reader = std::make_unique<QuantoInt4Reader>(table, **packed, g, *std::move(scales), *std::move(shifts), *type);
    } else {
      absl::StatusOr<const TensorInfo*> data = tensors.Require(m + ".weight._data", m);
      if (!data.ok()) return data.status();
      if ((*data)->shape.empty() || scales->size() != (*data)->shape[0]) {
        return Inconsistent((*data)->name, "the scale does not have one value per row");
      }
      using Codes = RowScaledReader::Codes;
      const Codes codes = (*data)->dtype == DType::kI8       ? Codes::kInt8
                          : (*data)->dtype == DType::kF8E5M2 ? Codes::kFp8E5M2
                                                             : Codes::kFp8E4M3;
      shape = (*data)->shape;
      reader = std::make_unique<RowScaledReader>(table, **data, codes, *std::move(scales), *type);
    }
  } else if (absl::StartsWith(layout, "chatglm")) {
    if (!chatglm_bits) {
      return Unreadable(m + ".weight", "ChatGLM int4 and int8 look alike; config.json's quantization_bit says which");
    }
    absl::StatusOr<const TensorInfo*> w = tensors.Require(m + ".weight", m);
    absl::StatusOr<const TensorInfo*> scale_t = tensors.Require(m + ".weight_scale", m);
    if (!w.ok()) return w.status();
    if (!scale_t.ok()) return scale_t.status();
    absl::StatusOr<std::vector<float>> scales = tensors.Floats(**scale_t);
    if (!scales.ok()) return scales.status();
    if ((*w)->shape.size() != 2 || scales->size() != (*w)->shape[0])
      return Inconsistent((*w)->name, "weight and weight_scale differ in rows");
    const bool int4 = *chatglm_bits == 4;
    shape = {(*w)->shape[0], (*w)->shape[1] * (int4 ? 2 : 1)};
    original = FloatTypeOf((*scale_t)->dtype).value_or(StoredFloat::kF16);
    using Codes = RowScaledReader::Codes;
    reader = std::make_unique<RowScaledReader>(table, **w, int4 ? Codes::kNibbles : Codes::kInt8, *std::move(scales),
                                               original);
  } else if (layout == "fp8_e4m3" || layout == "fp8_e5m2") {
    const TensorInfo* t = tensors.Find(group.tensors.front());
    if (t == nullptr || t->shape.size() != 2)
      return Unreadable(group.tensors.front(), "only 2-D fp8 weights are read back");
    using Codes = RowScaledReader::Codes;
    shape = t->shape;
    reader = std::make_unique<RowScaledReader>(table, *t, layout == "fp8_e4m3" ? Codes::kFp8E4M3 : Codes::kFp8E5M2,
                                               std::vector<float>(t->shape[0], 1.0f), StoredFloat::kF32);
    original = StoredFloat::kF16;
  } else {
    return Unreadable(group.tensors.front(), absl::StrCat("layout ", layout, " cannot be read back"));
  }
  reader->name_ = absl::StartsWith(layout, "fp8") ? group.tensors.front() : m + ".weight";
  reader->shape_ = std::move(shape);
  reader->original_ = original;
  reader->layout_ = layout;
  return reader;
}

}  // namespace modelsmith
