// Core ML's weight files (an .mlpackage's weights/*.bin): MILBlob storage version 2
// (shared/reference/coreml.md section 3). Little-endian throughout:
//   header, 64 bytes at 0:  uint32 count, uint32 version (= 2), 56 reserved bytes;
//   per blob, on a 64-byte boundary: a 64-byte record (uint32 sentinel 0xDEADBEEF, uint32
//   dtype, uint64 size, uint64 data offset, uint64 padding bits, 32 reserved bytes) and then its
//   size bytes of data at the data offset. A program refers to a blob by its record's offset.
#ifndef MODELSMITH_WORKERS_FORMATS_MIL_BLOB_H_
#define MODELSMITH_WORKERS_FORMATS_MIL_BLOB_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

inline constexpr uint64_t kMilBlobAlignment = 64;
inline constexpr uint64_t kMilBlobHeaderBytes = 64;
inline constexpr uint64_t kMilBlobRecordBytes = 64;
inline constexpr uint32_t kMilBlobSentinel = 0xDEADBEEF;

struct MilBlob {
  uint64_t record_offset = 0;  // what a program's blobFileValue.offset names
  uint32_t dtype = 0;          // BlobDataType: 1 fp16, 2 fp32, 3 uint8, 4 int8, ... (MilBlobDtypeName)
  uint64_t size_bytes = 0;     // stored payload bytes (sub-byte types: packed, with padding bits)
  uint64_t data_offset = 0;
  uint64_t padding_bits = 0;
};

// "fp16", "uint4", ... for a BlobDataType code; "" for an unknown one.
absl::string_view MilBlobDtypeName(uint32_t dtype);
// The MIL DataType (mlmodel.proto) a BlobDataType stores; 0 for an unknown one.
int MilDataTypeOfBlob(uint32_t dtype);
// Bits per element of a BlobDataType; 0 for an unknown one.
int MilBlobDtypeBits(uint32_t dtype);

// One weight file, its header and every record walked and checked when opened: version 2, each
// record on its sentinel with a known dtype, data inside the file and after its record, padding
// bits below 8, and the header's count equal to the records found. Errors are INVALID_ARGUMENT
// MIL_BLOB_INVALID naming the file (`name`) and the offset.
class MilBlobFile {
 public:
  static absl::StatusOr<MilBlobFile> Open(const RandomAccessObject& file, std::string name);

  const std::string& name() const { return name_; }
  uint64_t size_bytes() const { return size_bytes_; }
  const std::map<uint64_t, MilBlob>& blobs() const { return blobs_; }
  // The blob whose record is at `record_offset`, or INVALID_ARGUMENT MIL_BLOB_INVALID naming
  // `who` (the op and parameter that refer to it) when no record starts there.
  absl::StatusOr<MilBlob> BlobAt(uint64_t record_offset, absl::string_view who) const;

 private:
  std::string name_;
  uint64_t size_bytes_ = 0;
  std::map<uint64_t, MilBlob> blobs_;  // by record offset
};

// Where each blob of a new weight file goes when blobs of `sizes` bytes are appended in order:
// the record offsets, and the file's total size. The layout coremltools writes: header, then per
// blob its record and data, each record 64-aligned.
struct MilBlobLayout {
  std::vector<uint64_t> record_offsets;
  uint64_t file_bytes = kMilBlobHeaderBytes;
};
MilBlobLayout LayOutMilBlobs(const std::vector<uint64_t>& sizes);

// The 64-byte header and a blob's record, as written.
std::string MilBlobHeaderBytes(uint32_t count);
std::string MilBlobRecordBytes(const MilBlob& blob);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_MIL_BLOB_H_
