#include "workers/formats/torch_writer.h"

#include <zlib.h>

#include <limits>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

constexpr uint32_t kLocalHeader = 0x04034b50;
constexpr uint32_t kDataDescriptor = 0x08074b50;
constexpr uint32_t kCentralHeader = 0x02014b50;
constexpr uint32_t kZip64EndRecord = 0x06064b50;
constexpr uint32_t kZip64Locator = 0x07064b50;
constexpr uint32_t kEndRecord = 0x06054b50;
constexpr uint32_t kMax32 = 0xFFFFFFFF;
constexpr uint16_t kMax16 = 0xFFFF;
// Bit 3: sizes and CRC follow the data; bit 11: UTF-8 names. Torch sets both.
constexpr uint16_t kFlags = 0x0808;
constexpr uint64_t kDataAlignment = 64;  // PyTorchStreamWriter's kFieldAlignment

void Put16(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v & 0xFF));
  s.push_back(static_cast<char>((v >> 8) & 0xFF));
}
void Put32(std::string& s, uint32_t v) { Put16(s, v & 0xFFFF), Put16(s, v >> 16); }
void Put64(std::string& s, uint64_t v) { Put32(s, static_cast<uint32_t>(v)), Put32(s, static_cast<uint32_t>(v >> 32)); }

// The legacy typed-storage class of a dtype, when torch has one (these load on every torch >= 1.6).
const char* LegacyStorageClass(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "FloatStorage";
    case DType::kF16: return "HalfStorage";
    case DType::kBF16: return "BFloat16Storage";
    case DType::kF64: return "DoubleStorage";
    case DType::kI64: return "LongStorage";
    case DType::kI32: return "IntStorage";
    case DType::kI16: return "ShortStorage";
    case DType::kI8: return "CharStorage";
    case DType::kU8: return "ByteStorage";
    case DType::kBool: return "BoolStorage";
    case DType::kC64: return "ComplexFloatStorage";
    default: return nullptr;
  }
}

// str(torch.<dtype>) without "torch.", for the dtypes that need _rebuild_tensor_v3.
const char* TorchDtypeName(DType dtype) {
  switch (dtype) {
    case DType::kF8E4M3: return "float8_e4m3fn";
    case DType::kF8E5M2: return "float8_e5m2";
    case DType::kF8E4M3Fnuz: return "float8_e4m3fnuz";
    case DType::kF8E5M2Fnuz: return "float8_e5m2fnuz";
    case DType::kF8E8M0: return "float8_e8m0fnu";
    case DType::kU16: return "uint16";
    case DType::kU32: return "uint32";
    case DType::kU64: return "uint64";
    default: return nullptr;
  }
}

// Pickle opcodes (protocol 2), as Python's pickle.py names them.
std::string Unicode(absl::string_view s) {  // BINUNICODE
  std::string out = "X";
  Put32(out, static_cast<uint32_t>(s.size()));
  return absl::StrCat(out, s);
}

std::string Int(uint64_t v) {
  std::string out;
  if (v < (uint64_t{1} << 31)) {  // BININT is signed
    out = "J";
    Put32(out, static_cast<uint32_t>(v));
  } else {  // LONG1, 8 bytes little-endian (a positive value below 2^63)
    out = "\x8a\x08";
    Put64(out, v);
  }
  return out;
}

std::string Global(absl::string_view module, absl::string_view name) {
  return absl::StrCat("c", module, "\n", name, "\n");
}

std::string IntTuple(const std::vector<uint64_t>& values) {
  std::string out = "(";  // MARK
  for (uint64_t v : values) out += Int(v);
  return out + "t";  // TUPLE
}

}  // namespace

absl::Status CheckTorchWritable(DType dtype) {
  if (LegacyStorageClass(dtype) || TorchDtypeName(dtype)) return absl::OkStatus();
  return MakeError(
      absl::StatusCode::kInvalidArgument, "TORCH_DTYPE_UNSUPPORTED",
      absl::StrCat("torch has no tensor type for ", DTypeName(dtype), "; it cannot be written to a torch checkpoint"));
}

std::string TorchStateDictPickle(const std::vector<TorchTensorEntry>& tensors) {
  const std::string ordered_dict = Global("collections", "OrderedDict") + ")R";  // OrderedDict()
  std::string p = "\x80\x02" + ordered_dict + "(";
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TorchTensorEntry& t = tensors[i];
    const uint64_t numel = ElementCount(t.shape).value_or(0);
    std::vector<uint64_t> strides(t.shape.size());
    for (uint64_t d = t.shape.size(), stride = 1; d-- > 0;) strides[d] = stride, stride *= t.shape[d];
    const char* legacy = LegacyStorageClass(t.dtype);
    // persistent_id: ("storage", storage type, key, location, numel) -- numel in bytes for an
    // untyped storage.
    const std::string storage =
        absl::StrCat("(", Unicode("storage"), legacy ? Global("torch", legacy) : Global("torch", "UntypedStorage"),
                     Unicode(std::to_string(i)), Unicode("cpu"),
                     Int(legacy ? numel : StorageBytes(t.dtype, t.shape).value_or(0)), "tQ");
    const std::string args = absl::StrCat(storage, Int(0), IntTuple(t.shape), IntTuple(strides), "\x89", ordered_dict,
                                          legacy ? "" : Global("torch", TorchDtypeName(t.dtype)));
    p += Unicode(t.name) + Global("torch._utils", legacy ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3") + "(" + args +
         "tR";
  }
  return p + "u.";  // SETITEMS, STOP
}

TorchZipWriter::TorchZipWriter(ObjectWriter& out, std::string archive_prefix)
    : out_(out), prefix_(std::move(archive_prefix)) {}

absl::Status TorchZipWriter::Put(const std::string& bytes) {
  if (absl::Status s = out_.Append({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}); !s.ok()) return s;
  offset_ += bytes.size();
  return absl::OkStatus();
}

absl::Status TorchZipWriter::BeginRecord(const std::string& name, uint64_t size) {
  if (in_record_) return absl::InternalError("torch zip: a record was begun inside another");
  const std::string full = absl::StrCat(prefix_, "/", name);
  record_zip64_ = size >= kMax32;
  const uint64_t zip64_extra = record_zip64_ ? 4 + 16 : 0;
  const uint64_t fixed = 30 + full.size() + zip64_extra + 4;
  const uint64_t pad = (kDataAlignment - (offset_ + fixed) % kDataAlignment) % kDataAlignment;
  std::string h;
  Put32(h, kLocalHeader);
  Put16(h, record_zip64_ ? 45 : 20);
  Put16(h, kFlags);
  Put16(h, 0);                  // stored
  Put16(h, 0), Put16(h, 0x21);  // time, date: 1980-01-01, as miniz writes without a clock
  Put32(h, 0);                  // CRC-32: in the data descriptor
  Put32(h, record_zip64_ ? kMax32 : 0), Put32(h, record_zip64_ ? kMax32 : 0);
  Put16(h, static_cast<uint32_t>(full.size()));
  Put16(h, static_cast<uint32_t>(zip64_extra + 4 + pad));
  h += full;
  if (record_zip64_) Put16(h, 0x0001), Put16(h, 16), Put64(h, 0), Put64(h, 0);
  h += "FB";
  Put16(h, static_cast<uint32_t>(pad));
  h.append(pad, 'Z');
  entries_.push_back({full, offset_, size, 0});
  in_record_ = true;
  record_size_ = 0;
  record_crc_ = static_cast<uint32_t>(crc32(0L, Z_NULL, 0));
  return Put(h);
}

absl::Status TorchZipWriter::AppendToRecord(std::span<const std::byte> data) {
  if (!in_record_) return absl::InternalError("torch zip: data outside a record");
  for (size_t at = 0; at < data.size();) {  // zlib takes 32-bit lengths
    const uInt piece = static_cast<uInt>(std::min<size_t>(data.size() - at, 1u << 30));
    record_crc_ = static_cast<uint32_t>(crc32(record_crc_, reinterpret_cast<const Bytef*>(data.data() + at), piece));
    at += piece;
  }
  record_size_ += data.size();
  if (absl::Status s = out_.Append(data); !s.ok()) return s;
  offset_ += data.size();
  return absl::OkStatus();
}

absl::Status TorchZipWriter::EndRecord() {
  if (!in_record_) return absl::InternalError("torch zip: no record to end");
  Entry& e = entries_.back();
  if (record_size_ != e.size) {
    return absl::InternalError(
        absl::StrCat("torch zip: record '", e.name, "' got ", record_size_, " bytes, ", e.size, " planned"));
  }
  e.crc32 = record_crc_;
  in_record_ = false;
  std::string d;
  Put32(d, kDataDescriptor);
  Put32(d, e.crc32);
  if (record_zip64_) {
    Put64(d, e.size), Put64(d, e.size);
  } else {
    Put32(d, static_cast<uint32_t>(e.size)), Put32(d, static_cast<uint32_t>(e.size));
  }
  return Put(d);
}

absl::Status TorchZipWriter::AddRecord(const std::string& name, std::span<const std::byte> data) {
  if (absl::Status s = BeginRecord(name, data.size()); !s.ok()) return s;
  if (absl::Status s = AppendToRecord(data); !s.ok()) return s;
  return EndRecord();
}

absl::Status TorchZipWriter::Finish() {
  if (in_record_) return absl::InternalError("torch zip: finished inside a record");
  const uint64_t directory_offset = offset_;
  std::string dir;
  for (const Entry& e : entries_) {
    const bool big_size = e.size >= kMax32;
    const bool big_offset = e.header_offset >= kMax32;
    std::string extra;
    if (big_size || big_offset) {
      Put16(extra, 0x0001);
      Put16(extra, (big_size ? 16 : 0) + (big_offset ? 8 : 0));
      if (big_size) Put64(extra, e.size), Put64(extra, e.size);
      if (big_offset) Put64(extra, e.header_offset);
    }
    Put32(dir, kCentralHeader);
    Put16(dir, 45), Put16(dir, extra.empty() ? 20 : 45);  // made by, needed
    Put16(dir, kFlags), Put16(dir, 0), Put16(dir, 0), Put16(dir, 0x21);
    Put32(dir, e.crc32);
    Put32(dir, big_size ? kMax32 : static_cast<uint32_t>(e.size)),
        Put32(dir, big_size ? kMax32 : static_cast<uint32_t>(e.size));
    Put16(dir, static_cast<uint32_t>(e.name.size())), Put16(dir, static_cast<uint32_t>(extra.size())), Put16(dir, 0);
    Put16(dir, 0), Put16(dir, 0), Put32(dir, 0);  // disk, internal and external attributes
    Put32(dir, big_offset ? kMax32 : static_cast<uint32_t>(e.header_offset));
    dir += e.name;
    dir += extra;
  }
  const uint64_t count = entries_.size();
  const bool zip64 = count >= kMax16 || directory_offset >= kMax32 || dir.size() >= kMax32;
  std::string end;
  if (zip64) {
    const uint64_t record_offset = directory_offset + dir.size();
    Put32(end, kZip64EndRecord), Put64(end, 44), Put16(end, 45), Put16(end, 45), Put32(end, 0), Put32(end, 0);
    Put64(end, count), Put64(end, count), Put64(end, dir.size()), Put64(end, directory_offset);
    Put32(end, kZip64Locator), Put32(end, 0), Put64(end, record_offset), Put32(end, 1);
  }
  Put32(end, kEndRecord), Put16(end, 0), Put16(end, 0);
  Put16(end, count >= kMax16 ? kMax16 : static_cast<uint32_t>(count));
  Put16(end, count >= kMax16 ? kMax16 : static_cast<uint32_t>(count));
  Put32(end, dir.size() >= kMax32 ? kMax32 : static_cast<uint32_t>(dir.size()));
  Put32(end, directory_offset >= kMax32 ? kMax32 : static_cast<uint32_t>(directory_offset));
  Put16(end, 0);  // comment length
  if (absl::Status s = Put(dir); !s.ok()) return s;
  return Put(end);
}

}  // namespace modelsmith
