#include "workers/formats/gguf.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxStringBytes = uint64_t{1} << 30;
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 30;
constexpr uint32_t kMaxDims = 4;
constexpr size_t kMaxTensorNameBytes = 63;  // GGML_MAX_NAME (64) with its NUL
constexpr int kMaxArrayNesting = 8;

absl::Status Malformed(absl::string_view reason, absl::string_view file, absl::string_view where,
                       absl::string_view field, absl::string_view what) {
  ErrorContext context{{"file", std::string(file)}};
  std::string message = absl::StrCat("GGUF file '", file, "'");
  if (!where.empty()) {
    context["tensor"] = std::string(where);
    absl::StrAppend(&message, ", '", where, "'");
  }
  if (!field.empty()) {
    context["field"] = std::string(field);
    absl::StrAppend(&message, ", field '", field, "'");
  }
  absl::StrAppend(&message, ": ", what);
  return MakeError(absl::StatusCode::kInvalidArgument, absl::StrCat("GGUF_", reason), message, std::move(context));
}

// Sequential reads through a bounded buffer, optionally copying what it reads into `capture`.
class Cursor {
 public:
  explicit Cursor(const RandomAccessObject& file) : file_(file) {}

  uint64_t position() const { return position_; }
  std::string* capture = nullptr;

  absl::Status Read(void* dst, uint64_t length) {
    if (length > file_.size_bytes() || position_ > file_.size_bytes() - length) {
      return Malformed("TRUNCATED", file_.uri(), "", "",
                       absl::StrCat("the header ends past the end of the file (", file_.size_bytes(), " bytes)"));
    }
    auto* out = static_cast<char*>(dst);
    while (length > 0) {
      if (position_ < buffer_start_ || position_ >= buffer_start_ + buffer_.size()) {
        buffer_start_ = position_;
        buffer_.resize(static_cast<size_t>(std::min<uint64_t>(kBufferBytes, file_.size_bytes() - position_)));
        if (absl::Status s = file_.ReadAt(position_, buffer_.size(), reinterpret_cast<std::byte*>(buffer_.data()));
            !s.ok()) {
          return s;
        }
      }
      const uint64_t from = position_ - buffer_start_;
      const uint64_t n = std::min<uint64_t>(length, buffer_.size() - from);
      std::memcpy(out, buffer_.data() + from, n);
      if (capture != nullptr) capture->append(buffer_.data() + from, n);
      out += n;
      position_ += n;
      length -= n;
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Get() {
    T value;
    if (absl::Status s = Read(&value, sizeof value); !s.ok()) return s;
    return value;
  }

  absl::StatusOr<std::string> String(absl::string_view where, absl::string_view field) {
    absl::StatusOr<uint64_t> length = Get<uint64_t>();
    if (!length.ok()) return length.status();
    if (*length > kMaxStringBytes) {
      return Malformed("STRING_TOO_LONG", file_.uri(), where, field, absl::StrCat("a string of ", *length, " bytes"));
    }
    if (*length > file_.size_bytes() - std::min(position_, file_.size_bytes())) {
      // Refused before allocating: a tiny file must not make the reader reserve a gigabyte.
      return Malformed("TRUNCATED", file_.uri(), where, field,
                       absl::StrCat("a string of ", *length, " bytes runs past the end of the file (",
                                    file_.size_bytes(), " bytes)"));
    }
    std::string text(*length, '\0');
    if (absl::Status s = Read(text.data(), *length); !s.ok()) return s;
    return text;
  }

  absl::Status Skip(uint64_t length) {
    std::string sink;
    while (length > 0) {
      const uint64_t n = std::min<uint64_t>(length, kBufferBytes);
      sink.resize(n);
      if (absl::Status s = Read(sink.data(), n); !s.ok()) return s;
      length -= n;
    }
    return absl::OkStatus();
  }

 private:
  static constexpr uint64_t kBufferBytes = 1 << 20;
  const RandomAccessObject& file_;
  uint64_t position_ = 0;
  uint64_t buffer_start_ = 0;
  std::string buffer_;
};

std::optional<uint64_t> ScalarBytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool: return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16: return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32: return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64: return 8;
    default: return std::nullopt;
  }
}

absl::Status ReadValue(Cursor& cursor, uint32_t type, absl::string_view key, absl::string_view file, int depth) {
  if (type > static_cast<uint32_t>(GgufValueType::kF64)) {
    return Malformed("INVALID_VALUE_TYPE", file, key, "type", absl::StrCat("unknown value type ", type));
  }
  const auto value_type = static_cast<GgufValueType>(type);
  if (std::optional<uint64_t> bytes = ScalarBytes(value_type)) {
    if (value_type == GgufValueType::kBool) {
      absl::StatusOr<uint8_t> b = cursor.Get<uint8_t>();
      if (!b.ok()) return b.status();
      if (*b > 1) return Malformed("INVALID_BOOL", file, key, "value", absl::StrCat("a bool of ", int{*b}));
      return absl::OkStatus();
    }
    return cursor.Skip(*bytes);
  }
  if (value_type == GgufValueType::kString) return cursor.String(key, "value").status();
  if (depth >= kMaxArrayNesting) return Malformed("ARRAY_TOO_DEEP", file, key, "value", "arrays nested too deeply");
  absl::StatusOr<uint32_t> element_type = cursor.Get<uint32_t>();
  if (!element_type.ok()) return element_type.status();
  absl::StatusOr<uint64_t> count = cursor.Get<uint64_t>();
  if (!count.ok()) return count.status();
  if (*count > kMaxArrayElements) {
    return Malformed("ARRAY_TOO_LONG", file, key, "value", absl::StrCat("an array of ", *count, " elements"));
  }
  if (*element_type <= static_cast<uint32_t>(GgufValueType::kF64)) {
    if (std::optional<uint64_t> bytes = ScalarBytes(static_cast<GgufValueType>(*element_type));
        bytes && *element_type != static_cast<uint32_t>(GgufValueType::kBool)) {
      return cursor.Skip(*bytes * *count);
    }
  }
  for (uint64_t i = 0; i < *count; ++i) {
    if (absl::Status s = ReadValue(cursor, *element_type, key, file, depth + 1); !s.ok()) return s;
  }
  return absl::OkStatus();
}

void AppendString(std::string& out, absl::string_view text) {
  const uint64_t length = text.size();
  out.append(reinterpret_cast<const char*>(&length), 8);
  out.append(text.data(), text.size());
}

template <typename T>
void AppendScalar(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

}  // namespace

std::optional<uint64_t> GgufKv::AsUnsigned() const {
  const std::optional<uint64_t> bytes = ScalarBytes(type);
  if (!bytes || value_bytes.size() != *bytes || type == GgufValueType::kF32 || type == GgufValueType::kF64 ||
      type == GgufValueType::kBool) {
    return std::nullopt;
  }
  uint64_t value = 0;
  std::memcpy(&value, value_bytes.data(), *bytes);
  const bool is_signed = type == GgufValueType::kI8 || type == GgufValueType::kI16 || type == GgufValueType::kI32 ||
                         type == GgufValueType::kI64;
  if (is_signed && (value >> (*bytes * 8 - 1)) & 1) return std::nullopt;
  return value;
}

std::optional<std::string> GgufKv::AsString() const {
  if (type != GgufValueType::kString || value_bytes.size() < 8) return std::nullopt;
  return value_bytes.substr(8);
}

std::optional<std::vector<std::string>> GgufKv::AsStringArray() const {
  uint32_t element_type = 0;
  uint64_t count = 0;
  if (type != GgufValueType::kArray || value_bytes.size() < 12) return std::nullopt;
  std::memcpy(&element_type, value_bytes.data(), 4);
  std::memcpy(&count, value_bytes.data() + 4, 8);
  if (element_type != static_cast<uint32_t>(GgufValueType::kString)) return std::nullopt;
  std::vector<std::string> values;
  size_t at = 12;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t length = 0;
    if (value_bytes.size() - at < 8) return std::nullopt;
    std::memcpy(&length, value_bytes.data() + at, 8);
    at += 8;
    if (value_bytes.size() - at < length) return std::nullopt;
    values.push_back(value_bytes.substr(at, length));
    at += length;
  }
  return values;
}

namespace {

// The elements of an ARRAY of a 4-byte `element` type, or nullopt.
template <typename T>
std::optional<std::vector<T>> FourByteArray(const GgufKv& kv, GgufValueType element) {
  static_assert(sizeof(T) == 4);
  if (kv.type != GgufValueType::kArray || kv.value_bytes.size() < 12) return std::nullopt;
  uint32_t element_type;
  uint64_t count;
  std::memcpy(&element_type, kv.value_bytes.data(), 4);
  std::memcpy(&count, kv.value_bytes.data() + 4, 8);
  if (element_type != static_cast<uint32_t>(element) || (kv.value_bytes.size() - 12) / 4 != count ||
      (kv.value_bytes.size() - 12) % 4 != 0)
    return std::nullopt;
  std::vector<T> values(count);
  std::memcpy(values.data(), kv.value_bytes.data() + 12, count * 4);
  return values;
}

}  // namespace

std::optional<std::vector<int32_t>> GgufKv::AsI32Array() const {
  return FourByteArray<int32_t>(*this, GgufValueType::kI32);
}

std::optional<std::vector<float>> GgufKv::AsF32Array() const {
  return FourByteArray<float>(*this, GgufValueType::kF32);
}

GgufKv GgufKv::String(std::string key, const std::string& value) {
  GgufKv kv{std::move(key), GgufValueType::kString, ""};
  AppendString(kv.value_bytes, value);
  return kv;
}

GgufKv GgufKv::U32(std::string key, uint32_t value) {
  GgufKv kv{std::move(key), GgufValueType::kU32, ""};
  AppendScalar(kv.value_bytes, value);
  return kv;
}

GgufKv GgufKv::I32(std::string key, int32_t value) {
  GgufKv kv{std::move(key), GgufValueType::kI32, ""};
  AppendScalar(kv.value_bytes, value);
  return kv;
}

GgufKv GgufKv::F32(std::string key, float value) {
  GgufKv kv{std::move(key), GgufValueType::kF32, ""};
  AppendScalar(kv.value_bytes, value);
  return kv;
}

GgufKv GgufKv::Bool(std::string key, bool value) {
  GgufKv kv{std::move(key), GgufValueType::kBool, ""};
  AppendScalar(kv.value_bytes, static_cast<uint8_t>(value ? 1 : 0));
  return kv;
}

// Arrays: element type (u32), count (u64), then the elements.
GgufKv GgufKv::StringArray(std::string key, const std::vector<std::string>& values) {
  GgufKv kv{std::move(key), GgufValueType::kArray, ""};
  AppendScalar(kv.value_bytes, static_cast<uint32_t>(GgufValueType::kString));
  AppendScalar(kv.value_bytes, static_cast<uint64_t>(values.size()));
  for (const std::string& v : values) AppendString(kv.value_bytes, v);
  return kv;
}

GgufKv GgufKv::I32Array(std::string key, const std::vector<int32_t>& values) {
  GgufKv kv{std::move(key), GgufValueType::kArray, ""};
  AppendScalar(kv.value_bytes, static_cast<uint32_t>(GgufValueType::kI32));
  AppendScalar(kv.value_bytes, static_cast<uint64_t>(values.size()));
  for (int32_t v : values) AppendScalar(kv.value_bytes, v);
  return kv;
}

GgufKv GgufKv::F32Array(std::string key, const std::vector<float>& values) {
  GgufKv kv{std::move(key), GgufValueType::kArray, ""};
  AppendScalar(kv.value_bytes, static_cast<uint32_t>(GgufValueType::kF32));
  AppendScalar(kv.value_bytes, static_cast<uint64_t>(values.size()));
  for (float v : values) AppendScalar(kv.value_bytes, v);
  return kv;
}

std::vector<uint64_t> GgufTensor::Shape() const { return std::vector<uint64_t>(ne.rbegin(), ne.rend()); }

const GgufKv* GgufFile::Find(const std::string& key) const {
  for (const GgufKv& kv : kvs) {
    if (kv.key == key) return &kv;
  }
  return nullptr;
}

std::string GgufSplitUri(absl::string_view prefix, uint64_t number, uint64_t count) {
  return absl::StrCat(prefix, absl::StrFormat("-%05d-of-%05d.gguf", number, count));
}

uint64_t GgufPadding(uint64_t size_bytes, uint32_t alignment) {
  return (alignment - size_bytes % alignment) % alignment;
}

absl::StatusOr<GgufFile> ReadGgufHeader(const RandomAccessObject& object) {
  const std::string& file = object.uri();
  Cursor cursor(object);
  GgufFile gguf;
  absl::StatusOr<uint32_t> magic = cursor.Get<uint32_t>();
  if (!magic.ok() || *magic != kMagic)
    return Malformed("BAD_MAGIC", file, "", "magic", "the file does not start with \"GGUF\"");
  absl::StatusOr<uint32_t> version = cursor.Get<uint32_t>();
  if (!version.ok()) return version.status();
  if (*version != 2 && *version != 3) {
    return Malformed("UNSUPPORTED_VERSION", file, "", "version",
                     absl::StrCat("version ", *version, " (readable: 2 and 3; a huge number means a big-endian file)"));
  }
  gguf.version = *version;
  absl::StatusOr<uint64_t> tensor_count = cursor.Get<uint64_t>();
  absl::StatusOr<uint64_t> kv_count = cursor.Get<uint64_t>();
  if (!tensor_count.ok() || !kv_count.ok()) return Malformed("TRUNCATED", file, "", "", "the header is cut short");
  // Every key/value takes at least 12 bytes and every tensor info at least 24: the counts cannot
  // exceed what the file could hold.
  if (*kv_count > object.size_bytes() / 12 || *tensor_count > object.size_bytes() / 24) {
    return Malformed(
        "INVALID_COUNT", file, "", "tensor_count/kv_count",
        absl::StrCat(*tensor_count, " tensors and ", *kv_count, " keys cannot fit in ", object.size_bytes(), " bytes"));
  }

  std::set<std::string> keys;
  for (uint64_t i = 0; i < *kv_count; ++i) {
    absl::StatusOr<std::string> key = cursor.String("", "key");
    if (!key.ok()) return key.status();
    if (!keys.insert(*key).second) return Malformed("DUPLICATE_KEY", file, *key, "key", "the key appears twice");
    absl::StatusOr<uint32_t> type = cursor.Get<uint32_t>();
    if (!type.ok()) return type.status();
    GgufKv kv{*key, static_cast<GgufValueType>(*type), ""};
    cursor.capture = &kv.value_bytes;
    absl::Status value = ReadValue(cursor, *type, *key, file, 0);
    cursor.capture = nullptr;
    if (!value.ok()) return value;
    gguf.kvs.push_back(std::move(kv));
  }
  if (const GgufKv* alignment = gguf.Find("general.alignment")) {
    std::optional<uint64_t> value = alignment->AsUnsigned();
    if (alignment->type != GgufValueType::kU32 || !value || *value == 0 || (*value & (*value - 1)) != 0) {
      return Malformed("INVALID_ALIGNMENT", file, "general.alignment", "value", "must be a UINT32 power of two");
    }
    gguf.alignment = static_cast<uint32_t>(*value);
  }

  std::set<std::string> names;
  uint64_t expected_offset = 0;
  for (uint64_t i = 0; i < *tensor_count; ++i) {
    GgufTensor tensor;
    absl::StatusOr<std::string> name = cursor.String("", "name");
    if (!name.ok()) return name.status();
    tensor.name = *name;
    if (tensor.name.size() > kMaxTensorNameBytes) {
      return Malformed("NAME_TOO_LONG", file, tensor.name, "name",
                       absl::StrCat("names are at most ", kMaxTensorNameBytes, " bytes"));
    }
    if (!names.insert(tensor.name).second)
      return Malformed("DUPLICATE_TENSOR", file, tensor.name, "name", "the tensor appears twice");
    absl::StatusOr<uint32_t> n_dims = cursor.Get<uint32_t>();
    if (!n_dims.ok()) return n_dims.status();
    if (*n_dims == 0 || *n_dims > kMaxDims) {
      return Malformed("INVALID_DIMS", file, tensor.name, "n_dims",
                       absl::StrCat(*n_dims, " dimensions (1 to 4 allowed)"));
    }
    for (uint32_t d = 0; d < *n_dims; ++d) {
      absl::StatusOr<uint64_t> dim = cursor.Get<uint64_t>();
      if (!dim.ok()) return dim.status();
      if (*dim > uint64_t{INT64_MAX}) return Malformed("INVALID_DIMS", file, tensor.name, "ne", "a negative dimension");
      tensor.ne.push_back(*dim);
    }
    absl::StatusOr<uint32_t> type = cursor.Get<uint32_t>();
    if (!type.ok()) return type.status();
    std::optional<GgmlTypeTraits> traits = GgmlTraits(*type);
    if (!traits)
      return Malformed("UNSUPPORTED_TYPE", file, tensor.name, "type",
                       absl::StrCat("ggml type ", *type, " is not supported"));
    tensor.type = traits->type;
    if (tensor.ne[0] % traits->block_elements != 0) {
      return Malformed("INVALID_DIMS", file, tensor.name, "ne",
                       absl::StrCat("ne[0] = ", tensor.ne[0], " is not a multiple of the ", traits->name,
                                    " block size ", traits->block_elements));
    }
    std::optional<uint64_t> elements = ElementCount(tensor.ne);
    uint64_t bytes = 0;
    if (!elements ||
        __builtin_mul_overflow(*elements / traits->block_elements, uint64_t{traits->block_bytes}, &bytes)) {
      return Malformed("SHAPE_OVERFLOW", file, tensor.name, "ne", "the element count overflows");
    }
    tensor.size_bytes = bytes;
    absl::StatusOr<uint64_t> offset = cursor.Get<uint64_t>();
    if (!offset.ok()) return offset.status();
    if (*offset != expected_offset) {
      return Malformed("INVALID_OFFSET", file, tensor.name, "offset",
                       absl::StrCat("offset ", *offset, " is not the running padded size ", expected_offset));
    }
    tensor.offset = *offset;
    // Every sum is checked: a size near 2^64 must not wrap its padding, the running offset or the
    // end-of-data check below into a small number that passes.
    uint64_t padded = 0;
    if (__builtin_add_overflow(bytes, GgufPadding(bytes, gguf.alignment), &padded) ||
        __builtin_add_overflow(expected_offset, padded, &expected_offset)) {
      return Malformed("SHAPE_OVERFLOW", file, tensor.name, "ne", "the data size overflows");
    }
    gguf.tensors.push_back(std::move(tensor));
  }
  gguf.data_start = cursor.position() + GgufPadding(cursor.position(), gguf.alignment);
  if (!gguf.tensors.empty()) {
    const GgufTensor& last = gguf.tensors.back();
    uint64_t data_end = 0;  // of the last tensor, relative to data_start; the offsets only grow
    if (gguf.data_start > object.size_bytes() || __builtin_add_overflow(last.offset, last.size_bytes, &data_end) ||
        data_end > object.size_bytes() - gguf.data_start) {
      return Malformed("TRUNCATED", file, last.name, "offset",
                       absl::StrCat("the tensor data ends past the end of the file (", object.size_bytes(), " bytes)"));
    }
  }
  return gguf;
}

std::string SerializeGgufHeader(const std::vector<GgufKv>& kvs, std::vector<GgufTensor>& tensors, uint32_t alignment) {
  std::string out;
  AppendScalar<uint32_t>(out, kMagic);
  AppendScalar<uint32_t>(out, 3);
  AppendScalar<uint64_t>(out, tensors.size());
  AppendScalar<uint64_t>(out, kvs.size());
  for (const GgufKv& kv : kvs) {
    AppendString(out, kv.key);
    AppendScalar<uint32_t>(out, static_cast<uint32_t>(kv.type));
    out += kv.value_bytes;
  }
  uint64_t offset = 0;
  for (GgufTensor& tensor : tensors) {
    tensor.offset = offset;
    AppendString(out, tensor.name);
    AppendScalar<uint32_t>(out, static_cast<uint32_t>(tensor.ne.size()));
    for (uint64_t dim : tensor.ne) AppendScalar<uint64_t>(out, dim);
    AppendScalar<uint32_t>(out, static_cast<uint32_t>(tensor.type));
    AppendScalar<uint64_t>(out, offset);
    offset += tensor.size_bytes + GgufPadding(tensor.size_bytes, alignment);
  }
  out.append(GgufPadding(out.size(), alignment), '\0');
  return out;
}

absl::Status CheckGgufTensorTable(const RandomAccessObject& written, const std::vector<GgufTensor>& expected) {
  absl::StatusOr<GgufFile> header = ReadGgufHeader(written);
  if (!header.ok()) return Annotate(header.status(), "verifying the written GGUF");
  bool same = header->tensors.size() == expected.size();
  for (size_t i = 0; same && i < expected.size(); ++i) {
    const GgufTensor& a = header->tensors[i];
    const GgufTensor& b = expected[i];
    same = a.name == b.name && a.ne == b.ne && a.type == b.type && a.offset == b.offset && a.size_bytes == b.size_bytes;
  }
  if (!same) {
    return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                     "the written GGUF's tensor table does not match the plan");
  }
  return absl::OkStatus();
}

}  // namespace modelsmith
