// ZipArchive: the record table of a zip file whose records are stored uncompressed, as torch.save
// writes them (PyTorchStreamWriter: stored records, 64-byte aligned data, ZIP64 when needed, data
// descriptors after each record). Only the central directory and the local headers are read;
// each record's data is a byte range of the file, read in place (no copy, no inflate).
//
// Layout (PKWARE APPNOTE 6.3, the parts torch uses):
//   [local header 0x04034b50, name, extra][data]([data descriptor]) ... per record
//   [central directory headers 0x02014b50 ...]
//   [ZIP64 end record 0x06064b50][ZIP64 locator 0x07064b50]   (when a field overflows 32 bits)
//   [end of central directory 0x06054b50, comment]
// Strictness (anything else is INVALID_ARGUMENT, reason TORCH_ZIP_*, naming the file, record and
// field): the end record and its comment end exactly at the end of the file; one disk only; the
// entry count and directory size agree with what is parsed; ZIP64 values come from the 0x0001
// extra field exactly where the 32-bit field is 0xFFFFFFFF; names are non-empty, without NUL,
// unique; records are not encrypted and stored (method 0, compressed size == size); each local
// header matches its directory entry (name; sizes unless a data descriptor follows); records lie
// before the directory and do not overlap one another. Limits: 1,000,000 records, a 256 MiB
// directory.
#ifndef MODELSMITH_WORKERS_FORMATS_ZIP_ARCHIVE_H_
#define MODELSMITH_WORKERS_FORMATS_ZIP_ARCHIVE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

struct ZipRecord {
  std::string name;
  uint64_t data_offset = 0;  // absolute, within the file
  uint64_t size = 0;
  uint32_t crc32 = 0;  // as the directory states it (not checked here)
  // Absolute offsets of the 4-byte little-endian fields that hold the CRC-32: the directory
  // entry's, the local header's (unless a data descriptor carries it) and the descriptor's. A
  // writer that changes the data in place rewrites all of them.
  std::vector<uint64_t> crc_fields;
};

struct ZipArchive {
  // In directory order.
  std::vector<ZipRecord> records;
  // name -> index into `records`.
  std::map<std::string, size_t, std::less<>> by_name;

  const ZipRecord* Find(absl::string_view name) const;
};

inline constexpr uint64_t kZipMaxRecords = 1'000'000;
inline constexpr uint64_t kZipMaxDirectoryBytes = 256ull << 20;

// True when the file starts with a local header signature ("PK\x03\x04").
bool LooksLikeZip(absl::string_view first_bytes);

absl::StatusOr<ZipArchive> ReadZipArchive(const RandomAccessObject& file);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_ZIP_ARCHIVE_H_
