#include "workers/formats/mil_blob.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

struct DtypeInfo {
  const char* name;
  int mil_type;
  int bits;
};

// BlobDataType codes 1..17 (shared/reference/coreml.md section 3).
constexpr DtypeInfo kDtypes[] = {
    {"", 0, 0},         {"fp16", 10, 16},   {"fp32", 11, 32},   {"uint8", 31, 8}, {"int8", 21, 8},
    {"bf16", 13, 16},   {"int16", 22, 16},  {"uint16", 32, 16}, {"int4", 25, 4},  {"uint1", 37, 1},
    {"uint2", 36, 2},   {"uint4", 35, 4},   {"uint3", 39, 3},   {"uint6", 38, 6}, {"int32", 23, 32},
    {"uint32", 33, 32}, {"fp8e4m3", 40, 8}, {"fp8e5m2", 41, 8},
};

const DtypeInfo& InfoOf(uint32_t dtype) { return dtype < std::size(kDtypes) ? kDtypes[dtype] : kDtypes[0]; }

uint32_t Load32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t Load64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
void Store32(char* p, uint32_t v) { std::memcpy(p, &v, 4); }
void Store64(char* p, uint64_t v) { std::memcpy(p, &v, 8); }

uint64_t AlignUp(uint64_t v) { return (v + kMilBlobAlignment - 1) / kMilBlobAlignment * kMilBlobAlignment; }

absl::Status Invalid(const std::string& name, uint64_t offset, absl::string_view what) {
  return MakeError(absl::StatusCode::kInvalidArgument, "MIL_BLOB_INVALID",
                   absl::StrCat("weight file '", name, "' at offset ", offset, ": ", what),
                   {{"file", name}, {"offset", absl::StrCat(offset)}});
}

}  // namespace

absl::string_view MilBlobDtypeName(uint32_t dtype) { return InfoOf(dtype).name; }
int MilDataTypeOfBlob(uint32_t dtype) { return InfoOf(dtype).mil_type; }
int MilBlobDtypeBits(uint32_t dtype) { return InfoOf(dtype).bits; }

absl::StatusOr<MilBlobFile> MilBlobFile::Open(const RandomAccessObject& file, std::string name) {
  MilBlobFile blobs;
  blobs.name_ = std::move(name);
  blobs.size_bytes_ = file.size_bytes();
  const uint64_t size = blobs.size_bytes_;
  if (size < kMilBlobHeaderBytes) return Invalid(blobs.name_, 0, "shorter than the 64-byte storage header");
  char header[kMilBlobHeaderBytes];
  if (absl::Status s = file.ReadAt(0, sizeof header, reinterpret_cast<std::byte*>(header)); !s.ok()) return s;
  const uint32_t count = Load32(header), version = Load32(header + 4);
  if (version != 2) return Invalid(blobs.name_, 4, absl::StrCat("storage version ", version, " (only 2 is defined)"));
  // The records, walked as coremltools' reader walks them: each next one at the end of the
  // previous data, rounded up to 64.
  uint64_t at = kMilBlobHeaderBytes;
  while (at < size) {
    if (size - at < kMilBlobRecordBytes) {
      // Trailing zero padding after the last blob is allowed; anything else is a cut record.
      std::string tail(size - at, '\0');
      if (absl::Status s = file.ReadAt(at, tail.size(), reinterpret_cast<std::byte*>(tail.data())); !s.ok()) return s;
      if (tail.find_first_not_of('\0') == std::string::npos) break;
      return Invalid(blobs.name_, at, "a blob record cut off by the end of the file");
    }
    char record[kMilBlobRecordBytes];
    if (absl::Status s = file.ReadAt(at, sizeof record, reinterpret_cast<std::byte*>(record)); !s.ok()) return s;
    MilBlob blob{at, Load32(record + 4), Load64(record + 8), Load64(record + 16), Load64(record + 24)};
    if (Load32(record) != kMilBlobSentinel) {
      if (blobs.blobs_.size() == count &&
          std::string(record, sizeof record).find_first_not_of('\0') == std::string::npos)
        break;  // zero padding after the last record
      return Invalid(blobs.name_, at, absl::StrFormat("no blob sentinel (0x%08X, not 0xDEADBEEF)", Load32(record)));
    }
    if (MilBlobDtypeBits(blob.dtype) == 0)
      return Invalid(blobs.name_, at, absl::StrCat("unknown blob dtype ", blob.dtype));
    if (blob.padding_bits >= 8)
      return Invalid(blobs.name_, at, absl::StrCat("padding of ", blob.padding_bits, " bits"));
    if (blob.data_offset < at + kMilBlobRecordBytes || blob.data_offset > size ||
        blob.size_bytes > size - blob.data_offset)
      return Invalid(blobs.name_, at,
                     absl::StrCat("data of ", blob.size_bytes, " bytes at ", blob.data_offset,
                                  " does not lie after its record inside the ", size, "-byte file"));
    blobs.blobs_.emplace(at, blob);
    at = AlignUp(blob.data_offset + blob.size_bytes);
  }
  if (blobs.blobs_.size() != count)
    return Invalid(blobs.name_, 0,
                   absl::StrCat("the header counts ", count, " blobs but ", blobs.blobs_.size(), " records follow it"));
  return blobs;
}

absl::StatusOr<MilBlob> MilBlobFile::BlobAt(uint64_t record_offset, absl::string_view who) const {
  auto it = blobs_.find(record_offset);
  if (it == blobs_.end()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "MIL_BLOB_INVALID",
                     absl::StrCat(who, " refers to offset ", record_offset, " of weight file '", name_,
                                  "', where no blob record starts"),
                     {{"file", name_}, {"offset", absl::StrCat(record_offset)}});
  }
  return it->second;
}

MilBlobLayout LayOutMilBlobs(const std::vector<uint64_t>& sizes) {
  MilBlobLayout layout;
  for (uint64_t size : sizes) {
    const uint64_t record = AlignUp(layout.file_bytes);
    layout.record_offsets.push_back(record);
    layout.file_bytes = record + kMilBlobRecordBytes + size;
  }
  return layout;
}

std::string MilBlobHeaderBytes(uint32_t count) {
  std::string header(kMilBlobHeaderBytes, '\0');
  Store32(header.data(), count);
  Store32(header.data() + 4, 2);
  return header;
}

std::string MilBlobRecordBytes(const MilBlob& blob) {
  std::string record(kMilBlobRecordBytes, '\0');
  Store32(record.data(), kMilBlobSentinel);
  Store32(record.data() + 4, blob.dtype);
  Store64(record.data() + 8, blob.size_bytes);
  Store64(record.data() + 16, blob.data_offset);
  Store64(record.data() + 24, blob.padding_bits);
  return record;
}

}  // namespace modelsmith
