// A torch.save checkpoint (pytorch_model.bin, .pt, .pth, .ckpt) read without executing it: the
// zip archive (zip_archive.h) and its data.pkl through the restricted unpickler
// (torch_pickle.h), each tensor resolved to a byte range of the file (formats.md §3).
//
// Archive layout (torch/serialization.py, caffe2/serialize/inline_container.cc):
//   <prefix>/data.pkl          the pickled state dict (protocol 2)
//   <prefix>/byteorder         "little" (absent in old files: little)
//   <prefix>/data/<key>        raw bytes of storage <key>, numel x element size
//   <prefix>/version or <prefix>/.data/version, <prefix>/.data/serialization_id
// <prefix> is any name (the first record's top directory); every record must be under it.
//
// Tensors: a contiguous view (row-major strides, dims of size 1 ignored) is a plain TensorInfo
// whose bytes start at its storage offset. Any other view carries its element strides
// (TensorInfo::strides) and data_offset points at element [0, ..., 0]; read it with
// ReadTensorElements (tensor_reader.h). A view that repeats an earlier one exactly (same storage,
// offset, shape, strides, dtype: tied weights) is an alias: listed, not repeated in `tensors`.
//
// Refused with a reason: the legacy pre-1.6 format and the older tar format
// (TORCH_LEGACY_FORMAT, UNIMPLEMENTED: re-save with torch >= 1.6), TorchScript archives
// (TORCH_SCRIPT_ARCHIVE), big-endian data (TORCH_BIG_ENDIAN), storages whose record is missing or
// of the wrong size (TORCH_STORAGE_MISMATCH), a data.pkl over 64 MiB (TORCH_PICKLE_TOO_LARGE).
#ifndef MODELSMITH_WORKERS_FORMATS_TORCH_CHECKPOINT_H_
#define MODELSMITH_WORKERS_FORMATS_TORCH_CHECKPOINT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/storage/object_store.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

inline constexpr uint64_t kTorchMaxPickleBytes = 64 << 20;

struct TensorAlias {
  std::string name;    // the later name, left out
  std::string target;  // the earlier name it repeats
};

struct TorchCheckpoint {
  std::string archive_prefix;
  std::vector<TensorInfo> tensors;  // state-dict order; file_index 0
  std::vector<TensorAlias> aliases;
  std::vector<std::string> skipped;  // non-tensor entries
  bool from_state_dict_entry = false;
};

// True when `head` (the first bytes of a file, at least 16 to be sure) starts a torch checkpoint:
// a zip archive, or the legacy format's pickled magic number.
bool LooksLikeTorchCheckpoint(absl::string_view head);

absl::StatusOr<TorchCheckpoint> ReadTorchCheckpoint(const RandomAccessObject& file);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_TORCH_CHECKPOINT_H_
