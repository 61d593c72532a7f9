#include "workers/formats/torch_checkpoint.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/formats/torch_pickle.h"
#include "workers/formats/zip_archive.h"

namespace modelsmith {
namespace {

// PROTO 2, LONG1 of 10 bytes: the legacy format's MAGIC_NUMBER 0x1950a86a20f9469cfc6c.
constexpr char kLegacyMagic[] = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

absl::Status CheckpointError(absl::StatusCode code, absl::string_view reason, const RandomAccessObject& file,
                             absl::string_view message, ErrorContext context = {}) {
  context["file"] = file.uri();
  return MakeError(code, reason, absl::StrCat("torch checkpoint '", file.uri(), "': ", message), std::move(context));
}

bool IsContiguous(const std::vector<uint64_t>& shape, const std::vector<uint64_t>& strides) {
  uint64_t expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] == 0) return true;
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

absl::StatusOr<std::string> ReadRecord(const RandomAccessObject& file, const ZipRecord& record) {
  std::string bytes(record.size, '\0');
  if (absl::Status s = file.ReadAt(record.data_offset, record.size, reinterpret_cast<std::byte*>(bytes.data()));
      !s.ok()) {
    return s;
  }
  return bytes;
}

}  // namespace

bool LooksLikeTorchCheckpoint(absl::string_view head) {
  return LooksLikeZip(head) || absl::StartsWith(head, absl::string_view(kLegacyMagic, sizeof(kLegacyMagic) - 1));
}

absl::StatusOr<TorchCheckpoint> ReadTorchCheckpoint(const RandomAccessObject& file) {
  std::string head(std::min<uint64_t>(512, file.size_bytes()), '\0');
  if (absl::Status s = file.ReadAt(0, head.size(), reinterpret_cast<std::byte*>(head.data())); !s.ok()) return s;
  if (absl::StartsWith(head, absl::string_view(kLegacyMagic, sizeof(kLegacyMagic) - 1)) ||
      (head.size() >= 262 && head.compare(257, 5, "ustar") == 0)) {
    return CheckpointError(absl::StatusCode::kUnimplemented, "TORCH_LEGACY_FORMAT", file,
                           "is in the legacy (pre-1.6, non-zip) torch.save format, which is not read here; re-save it "
                           "with torch >= 1.6 (torch.save(torch.load(f), f)) or convert it where torch is installed");
  }
  if (!LooksLikeZip(head)) {
    return CheckpointError(absl::StatusCode::kInvalidArgument, "TORCH_NOT_A_CHECKPOINT", file,
                           "is neither a zip archive nor a legacy torch file");
  }
  absl::StatusOr<ZipArchive> archive = ReadZipArchive(file);
  if (!archive.ok()) return archive.status();
  if (archive->records.empty()) {
    return CheckpointError(absl::StatusCode::kInvalidArgument, "TORCH_MISSING_RECORD", file, "the archive is empty");
  }
  TorchCheckpoint checkpoint;
  const std::string& first = archive->records.front().name;
  checkpoint.archive_prefix = first.substr(0, first.find('/'));
  const std::string prefix = checkpoint.archive_prefix + "/";
  for (const ZipRecord& r : archive->records) {
    if (!absl::StartsWith(r.name, prefix)) {
      return CheckpointError(absl::StatusCode::kInvalidArgument, "TORCH_BAD_ARCHIVE", file,
                             absl::StrCat("record '", r.name, "' is outside the archive directory '", prefix, "'"),
                             {{"tensor", r.name}});
    }
  }
  if (archive->Find(prefix + "constants.pkl") != nullptr || archive->Find(prefix + "code/") != nullptr) {
    return CheckpointError(absl::StatusCode::kInvalidArgument, "TORCH_SCRIPT_ARCHIVE", file,
                           "is a TorchScript archive (torch.jit.save), not a torch.save checkpoint");
  }
  if (const ZipRecord* order = archive->Find(prefix + "byteorder"); order != nullptr) {
    if (order->size > 16) {
      return CheckpointError(absl::StatusCode::kInvalidArgument, "TORCH_BAD_ARCHIVE", file,
                             "the byteorder record is too long");
    }
    absl::StatusOr<std::string> value = ReadRecord(file, *order);
    if (!value.ok()) return value.status();
    if (*value != "little") {
      return CheckpointError(absl::StatusCode::kInvalidArgument, "TORCH_BIG_ENDIAN", file,
                             absl::StrCat("byte order '", *value, "' is not supported (only little-endian)"));
    }
  }
  const ZipRecord* pickle_record = archive->Find(prefix + "data.pkl");
  if (pickle_record == nullptr) {
    return CheckpointError(absl::StatusCode::kInvalidArgument, "TORCH_MISSING_RECORD", file,
                           absl::StrCat("no '", prefix, "data.pkl' record"));
  }
  if (pickle_record->size > kTorchMaxPickleBytes) {
    return CheckpointError(
        absl::StatusCode::kInvalidArgument, "TORCH_PICKLE_TOO_LARGE", file,
        absl::StrCat("data.pkl has ", pickle_record->size, " bytes, more than ", kTorchMaxPickleBytes));
  }
  absl::StatusOr<std::string> pickle_bytes = ReadRecord(file, *pickle_record);
  if (!pickle_bytes.ok()) return pickle_bytes.status();
  absl::StatusOr<TorchPickle> pickle = ReadTorchPickle(*pickle_bytes, file.uri());
  if (!pickle.ok()) return pickle.status();

  // Each storage's record, of exactly the storage's size.
  std::vector<const ZipRecord*> records;
  for (const TorchStorage& s : pickle->storages) {
    const std::string name = absl::StrCat(prefix, "data/", s.key);
    const ZipRecord* record = archive->Find(name);
    if (record == nullptr) {
      return CheckpointError(absl::StatusCode::kInvalidArgument, "TORCH_STORAGE_MISMATCH", file,
                             absl::StrCat("storage '", s.key, "' has no record '", name, "'"), {{"field", name}});
    }
    const unsigned __int128 bytes = static_cast<unsigned __int128>(s.numel) * (s.dtype ? DTypeBits(*s.dtype) / 8 : 1);
    if (bytes != record->size) {
      return CheckpointError(absl::StatusCode::kInvalidArgument, "TORCH_STORAGE_MISMATCH", file,
                             absl::StrCat("storage '", s.key, "' should hold ",
                                          static_cast<uint64_t>(std::min<unsigned __int128>(bytes, UINT64_MAX)),
                                          " bytes but its record has ", record->size),
                             {{"field", name}});
    }
    records.push_back(record);
  }

  std::map<std::tuple<size_t, uint64_t, std::vector<uint64_t>, std::vector<uint64_t>, DType>, std::string> seen;
  for (const TorchTensor& t : pickle->tensors) {
    auto [it, inserted] =
        seen.try_emplace(std::make_tuple(t.storage, t.storage_offset, t.shape, t.strides, t.dtype), t.name);
    if (!inserted) {
      checkpoint.aliases.push_back(TensorAlias{t.name, it->second});
      continue;
    }
    const uint64_t element_bytes = DTypeBits(t.dtype) / 8;
    TensorInfo info;
    info.name = t.name;
    info.dtype = t.dtype;
    info.shape = t.shape;
    // The view was checked against the storage's extent, so none of this overflows.
    info.data_offset = records[t.storage]->data_offset + t.storage_offset * element_bytes;
    const std::optional<uint64_t> size = StorageBytes(t.dtype, t.shape);
    if (!size || *size > records[t.storage]->size) {
      // Only a view with a zero stride (expand/broadcast) can be larger than its storage.
      return CheckpointError(
          absl::StatusCode::kInvalidArgument, "TORCH_UNSUPPORTED_VIEW", file,
          absl::StrCat("tensor '", t.name, "' is a broadcast view larger than its storage; save it with .contiguous()"),
          {{"tensor", t.name}});
    }
    info.size_bytes = *size;
    if (!IsContiguous(t.shape, t.strides)) info.strides = t.strides;
    checkpoint.tensors.push_back(std::move(info));
  }
  checkpoint.skipped = std::move(pickle->skipped);
  checkpoint.from_state_dict_entry = pickle->from_state_dict_entry;
  return checkpoint;
}

}  // namespace modelsmith
