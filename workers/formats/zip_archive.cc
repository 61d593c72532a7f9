#include "workers/formats/zip_archive.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

constexpr uint32_t kLocalSignature = 0x04034b50;
constexpr uint32_t kDescriptorSignature = 0x08074b50;
constexpr uint32_t kCentralSignature = 0x02014b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr uint64_t kEndBytes = 22;
constexpr uint64_t kZip64LocatorBytes = 20;
constexpr uint64_t kZip64EndBytes = 56;
constexpr uint64_t kCentralBytes = 46;
constexpr uint64_t kLocalBytes = 30;
constexpr uint64_t kMaxComment = 0xFFFF;

absl::Status ZipError(absl::string_view reason, const RandomAccessObject& file, absl::string_view message,
                      ErrorContext context = {}) {
  context["file"] = file.uri();
  return MakeError(absl::StatusCode::kInvalidArgument, reason,
                   absl::StrCat("zip archive '", file.uri(), "': ", message), std::move(context));
}

uint16_t U16(const std::byte* p) { return static_cast<uint16_t>(uint16_t(p[0]) | uint16_t(p[1]) << 8); }
uint32_t U32(const std::byte* p) { return uint32_t(U16(p)) | uint32_t(U16(p + 2)) << 16; }
uint64_t U64(const std::byte* p) { return uint64_t(U32(p)) | uint64_t(U32(p + 4)) << 32; }

absl::StatusOr<std::vector<std::byte>> ReadRange(const RandomAccessObject& file, uint64_t offset, uint64_t length) {
  std::vector<std::byte> bytes(length);
  if (absl::Status s = file.ReadAt(offset, length, bytes.data()); !s.ok()) return s;
  return bytes;
}

struct Directory {
  uint64_t entries = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t end = 0;  // where the directory must end: the ZIP64 end record or the end record
};

// Finds the end record (its comment must end the file) and, when present, the ZIP64 end record.
absl::StatusOr<Directory> ReadDirectoryLocation(const RandomAccessObject& file) {
  const uint64_t size = file.size_bytes();
  if (size < kEndBytes) return ZipError("TORCH_ZIP_TRUNCATED", file, absl::StrCat("only ", size, " bytes"));
  const uint64_t tail_bytes = std::min(size, kEndBytes + kMaxComment);
  absl::StatusOr<std::vector<std::byte>> tail = ReadRange(file, size - tail_bytes, tail_bytes);
  if (!tail.ok()) return tail.status();
  // Scan backwards: the last end record whose comment reaches exactly the end of the file.
  int64_t found = -1;
  for (int64_t at = static_cast<int64_t>(tail_bytes - kEndBytes); at >= 0; --at) {
    const std::byte* p = tail->data() + at;
    if (U32(p) == kEndSignature && static_cast<uint64_t>(at) + kEndBytes + U16(p + 20) == tail_bytes) {
      found = at;
      break;
    }
  }
  if (found < 0) {
    return ZipError("TORCH_ZIP_NO_END_RECORD", file,
                    "no end-of-central-directory record ending the file (truncated, or not a zip archive)");
  }
  const std::byte* end = tail->data() + found;
  const uint64_t end_offset = size - tail_bytes + static_cast<uint64_t>(found);
  if (U16(end + 4) != 0 || U16(end + 6) != 0 || U16(end + 8) != U16(end + 10)) {
    return ZipError("TORCH_ZIP_MULTI_DISK", file, "spans several disks", {{"field", "end record disk numbers"}});
  }
  Directory dir{U16(end + 10), U32(end + 16), U32(end + 12), end_offset};
  const bool overflowed = dir.entries == 0xFFFF || dir.offset == 0xFFFFFFFF || dir.size == 0xFFFFFFFF;
  bool has_locator = false;
  std::vector<std::byte> locator(kZip64LocatorBytes);
  if (end_offset >= kZip64LocatorBytes) {
    if (absl::Status s = file.ReadAt(end_offset - kZip64LocatorBytes, kZip64LocatorBytes, locator.data()); !s.ok())
      return s;
    has_locator = U32(locator.data()) == kZip64LocatorSignature;
  }
  if (!has_locator) {
    if (overflowed) {
      return ZipError("TORCH_ZIP_BAD_ZIP64", file, "the end record says ZIP64 but there is no ZIP64 locator");
    }
    return dir;
  }
  if (U32(locator.data() + 4) != 0 || U32(locator.data() + 16) != 1) {
    return ZipError("TORCH_ZIP_MULTI_DISK", file, "spans several disks", {{"field", "ZIP64 locator"}});
  }
  const uint64_t record_offset = U64(locator.data() + 8);
  if (record_offset > end_offset - kZip64LocatorBytes ||
      end_offset - kZip64LocatorBytes - record_offset < kZip64EndBytes) {
    return ZipError("TORCH_ZIP_BAD_ZIP64", file,
                    absl::StrCat("the ZIP64 end record offset ", record_offset, " is out of place"));
  }
  absl::StatusOr<std::vector<std::byte>> record = ReadRange(file, record_offset, kZip64EndBytes);
  if (!record.ok()) return record.status();
  const std::byte* r = record->data();
  if (U32(r) != kZip64EndSignature) {
    return ZipError("TORCH_ZIP_BAD_ZIP64", file, "no ZIP64 end record where the locator points");
  }
  // The record's own size field counts what follows its first 12 bytes; extensible data may
  // follow, but the record must end at the locator.
  if (U64(r + 4) + 12 != end_offset - kZip64LocatorBytes - record_offset) {
    return ZipError("TORCH_ZIP_BAD_ZIP64", file, "the ZIP64 end record does not end at the locator");
  }
  if (U32(r + 16) != 0 || U32(r + 20) != 0 || U64(r + 24) != U64(r + 32)) {
    return ZipError("TORCH_ZIP_MULTI_DISK", file, "spans several disks", {{"field", "ZIP64 end record"}});
  }
  const uint64_t entries = U64(r + 32);
  const uint64_t dir_size = U64(r + 40);
  const uint64_t dir_offset = U64(r + 48);
  // A 32-bit field that did not overflow must agree with its 64-bit value.
  if ((dir.entries != 0xFFFF && dir.entries != entries) || (dir.size != 0xFFFFFFFF && dir.size != dir_size) ||
      (dir.offset != 0xFFFFFFFF && dir.offset != dir_offset)) {
    return ZipError("TORCH_ZIP_BAD_ZIP64", file, "the end record and the ZIP64 end record disagree");
  }
  return Directory{entries, dir_offset, dir_size, record_offset};
}

// The ZIP64 extended information field (0x0001) of a directory entry: the 64-bit values of the
// fields that are 0xFFFFFFFF, in the order size, compressed size, local header offset.
absl::Status ApplyZip64Extra(const RandomAccessObject& file, const std::string& name, const std::byte* extra,
                             uint64_t extra_bytes, uint64_t* size, uint64_t* compressed, uint64_t* offset) {
  const bool need_size = *size == 0xFFFFFFFF;
  const bool need_compressed = *compressed == 0xFFFFFFFF;
  const bool need_offset = *offset == 0xFFFFFFFF;
  bool seen = false;
  for (uint64_t at = 0; at < extra_bytes;) {
    if (extra_bytes - at < 4) {
      return ZipError("TORCH_ZIP_BAD_EXTRA", file, absl::StrCat("record '", name, "': truncated extra field"),
                      {{"tensor", name}});
    }
    const uint16_t id = U16(extra + at);
    const uint16_t length = U16(extra + at + 2);
    if (length > extra_bytes - at - 4) {
      return ZipError("TORCH_ZIP_BAD_EXTRA", file, absl::StrCat("record '", name, "': extra field runs past its end"),
                      {{"tensor", name}});
    }
    if (id == 0x0001) {
      if (seen)
        return ZipError("TORCH_ZIP_BAD_ZIP64", file, absl::StrCat("record '", name, "': two ZIP64 fields"),
                        {{"tensor", name}});
      seen = true;
      const std::byte* p = extra + at + 4;
      uint16_t left = length;
      auto take = [&](bool needed, uint64_t* value) {
        if (!needed) return true;
        if (left < 8) return false;
        *value = U64(p);
        p += 8;
        left -= 8;
        return true;
      };
      if (!take(need_size, size) || !take(need_compressed, compressed) || !take(need_offset, offset)) {
        return ZipError("TORCH_ZIP_BAD_ZIP64", file, absl::StrCat("record '", name, "': ZIP64 field too short"),
                        {{"tensor", name}});
      }
    }
    at += 4 + length;
  }
  if ((need_size || need_compressed || need_offset) && !seen) {
    return ZipError("TORCH_ZIP_BAD_ZIP64", file,
                    absl::StrCat("record '", name, "': 32-bit field overflowed without a ZIP64 field"),
                    {{"tensor", name}});
  }
  return absl::OkStatus();
}

struct Placed {
  size_t index;
  uint64_t header_offset;
  uint64_t end;  // first byte after the record's data (and its data descriptor, when flagged)
};

}  // namespace

const ZipRecord* ZipArchive::Find(absl::string_view name) const {
  auto it = by_name.find(name);
  return it == by_name.end() ? nullptr : &records[it->second];
}

bool LooksLikeZip(absl::string_view first_bytes) {
  return first_bytes.size() >= 4 && first_bytes.substr(0, 4) == absl::string_view("PK\x03\x04", 4);
}

absl::StatusOr<ZipArchive> ReadZipArchive(const RandomAccessObject& file) {
  absl::StatusOr<Directory> dir = ReadDirectoryLocation(file);
  if (!dir.ok()) return dir.status();
  if (dir->entries > kZipMaxRecords) {
    return ZipError("TORCH_ZIP_TOO_MANY_RECORDS", file,
                    absl::StrCat(dir->entries, " records, at most ", kZipMaxRecords));
  }
  if (dir->size > kZipMaxDirectoryBytes) {
    return ZipError("TORCH_ZIP_DIRECTORY_TOO_LARGE", file, absl::StrCat("central directory of ", dir->size, " bytes"));
  }
  if (dir->offset > dir->end || dir->end - dir->offset != dir->size) {
    return ZipError("TORCH_ZIP_BAD_DIRECTORY", file,
                    absl::StrCat("central directory [", dir->offset, ", +", dir->size,
                                 ") does not end at the end record (", dir->end, ")"));
  }
  absl::StatusOr<std::vector<std::byte>> central = ReadRange(file, dir->offset, dir->size);
  if (!central.ok()) return central.status();

  ZipArchive archive;
  std::vector<Placed> placed;
  std::vector<uint16_t> flags;
  uint64_t at = 0;
  for (uint64_t i = 0; i < dir->entries; ++i) {
    if (dir->size - at < kCentralBytes || U32(central->data() + at) != kCentralSignature) {
      return ZipError("TORCH_ZIP_BAD_DIRECTORY", file, absl::StrCat("directory entry ", i, " is missing or truncated"));
    }
    const std::byte* h = central->data() + at;
    const uint16_t flag = U16(h + 8);
    const uint16_t method = U16(h + 10);
    const uint32_t crc = U32(h + 16);
    uint64_t compressed = U32(h + 20);
    uint64_t size = U32(h + 24);
    const uint64_t name_bytes = U16(h + 28);
    const uint64_t extra_bytes = U16(h + 30);
    const uint64_t comment_bytes = U16(h + 32);
    const uint16_t disk = U16(h + 34);
    uint64_t header_offset = U32(h + 42);
    if (dir->size - at - kCentralBytes < name_bytes + extra_bytes + comment_bytes) {
      return ZipError("TORCH_ZIP_BAD_DIRECTORY", file, absl::StrCat("directory entry ", i, " runs past the directory"));
    }
    std::string name(reinterpret_cast<const char*>(h + kCentralBytes), name_bytes);
    if (name.empty() || name.find('\0') != std::string::npos) {
      return ZipError("TORCH_ZIP_BAD_NAME", file,
                      absl::StrCat("directory entry ", i, " has an empty or NUL-holding name"));
    }
    if (absl::Status s = ApplyZip64Extra(file, name, h + kCentralBytes + name_bytes, extra_bytes, &size, &compressed,
                                         &header_offset);
        !s.ok()) {
      return s;
    }
    if (disk != 0 && disk != 0xFFFF) {
      return ZipError("TORCH_ZIP_MULTI_DISK", file, absl::StrCat("record '", name, "' is on disk ", disk),
                      {{"tensor", name}});
    }
    if (flag & 0x0001) {
      return ZipError("TORCH_ZIP_ENCRYPTED", file, absl::StrCat("record '", name, "' is encrypted"),
                      {{"tensor", name}});
    }
    if (method != 0 || compressed != size) {
      return ZipError("TORCH_ZIP_COMPRESSED_RECORD", file,
                      absl::StrCat("record '", name, "' is compressed (method ", method,
                                   "); torch.save stores records uncompressed, and so must any archive read here"),
                      {{"tensor", name}});
    }
    if (archive.by_name.count(name) != 0) {
      return ZipError("TORCH_ZIP_DUPLICATE_NAME", file, absl::StrCat("record '", name, "' appears twice"),
                      {{"tensor", name}});
    }
    archive.by_name.emplace(name, archive.records.size());
    archive.records.push_back(ZipRecord{std::move(name), 0, size, crc, {dir->offset + at + 16}});
    placed.push_back(Placed{placed.size(), header_offset, 0});
    flags.push_back(flag);
    at += kCentralBytes + name_bytes + extra_bytes + comment_bytes;
  }
  if (at != dir->size) {
    return ZipError("TORCH_ZIP_BAD_DIRECTORY", file,
                    absl::StrCat("the directory has ", dir->size - at, " bytes after its last entry"));
  }

  // Local headers: where each record's data starts, checked against the directory.
  for (Placed& p : placed) {
    ZipRecord& record = archive.records[p.index];
    if (p.header_offset > dir->offset || dir->offset - p.header_offset < kLocalBytes) {
      return ZipError("TORCH_ZIP_BAD_LOCAL_HEADER", file,
                      absl::StrCat("record '", record.name, "' has its header out of place"),
                      {{"tensor", record.name}});
    }
    std::vector<std::byte> local(kLocalBytes);
    if (absl::Status s = file.ReadAt(p.header_offset, kLocalBytes, local.data()); !s.ok()) return s;
    const std::byte* l = local.data();
    const uint64_t name_bytes = U16(l + 26);
    const uint64_t extra_bytes = U16(l + 28);
    if (U32(l) != kLocalSignature || name_bytes != record.name.size()) {
      return ZipError("TORCH_ZIP_BAD_LOCAL_HEADER", file,
                      absl::StrCat("record '", record.name, "' has no matching local header"),
                      {{"tensor", record.name}});
    }
    const uint64_t data_offset = p.header_offset + kLocalBytes + name_bytes + extra_bytes;
    if (data_offset > dir->offset || dir->offset - data_offset < record.size) {
      return ZipError("TORCH_ZIP_RECORD_OUT_OF_BOUNDS", file,
                      absl::StrCat("record '", record.name, "' data [", data_offset, ", +", record.size,
                                   ") runs into the directory"),
                      {{"tensor", record.name}});
    }
    absl::StatusOr<std::vector<std::byte>> local_name = ReadRange(file, p.header_offset + kLocalBytes, name_bytes);
    if (!local_name.ok()) return local_name.status();
    if (std::memcmp(local_name->data(), record.name.data(), name_bytes) != 0) {
      return ZipError("TORCH_ZIP_BAD_LOCAL_HEADER", file,
                      absl::StrCat("record '", record.name, "': local header names another record"),
                      {{"tensor", record.name}});
    }
    const bool descriptor = (flags[p.index] & 0x0008) != 0;
    if (!descriptor) {
      // Sizes in the local header must agree (a ZIP64 local header says 0xFFFFFFFF).
      const uint64_t local_size = U32(l + 22);
      if (local_size != 0xFFFFFFFF && local_size != record.size) {
        return ZipError(
            "TORCH_ZIP_BAD_LOCAL_HEADER", file,
            absl::StrCat("record '", record.name, "': local size ", local_size, " but directory size ", record.size),
            {{"tensor", record.name}});
      }
    }
    record.data_offset = data_offset;
    // A data descriptor takes at least 12 bytes (crc, two 32-bit sizes) after the data, 16 with
    // its optional signature.
    p.end = data_offset + record.size + (descriptor ? 12 : 0);
    if (!descriptor) {
      record.crc_fields.push_back(p.header_offset + 14);
    } else if (p.end <= dir->offset) {
      absl::StatusOr<std::vector<std::byte>> head = ReadRange(file, data_offset + record.size, 4);
      if (!head.ok()) return head.status();
      const bool signed_descriptor = U32(head->data()) == kDescriptorSignature;
      if (signed_descriptor) p.end += 4;
      record.crc_fields.push_back(data_offset + record.size + (signed_descriptor ? 4 : 0));
    }
    if (p.end > dir->offset) {
      return ZipError("TORCH_ZIP_RECORD_OUT_OF_BOUNDS", file,
                      absl::StrCat("record '", record.name, "' runs into the directory"), {{"tensor", record.name}});
    }
  }
  std::sort(placed.begin(), placed.end(),
            [](const Placed& a, const Placed& b) { return a.header_offset < b.header_offset; });
  for (size_t i = 1; i < placed.size(); ++i) {
    if (placed[i].header_offset < placed[i - 1].end) {
      const std::string& a = archive.records[placed[i - 1].index].name;
      const std::string& b = archive.records[placed[i].index].name;
      return ZipError("TORCH_ZIP_OVERLAPPING_RECORDS", file, absl::StrCat("records '", a, "' and '", b, "' overlap"),
                      {{"tensor", b}});
    }
  }
  return archive;
}

}  // namespace modelsmith
