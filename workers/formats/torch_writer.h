// Writing a torch.save checkpoint (what torch.load reads as an OrderedDict state dict), streamed:
// the tensors' bytes pass through once, in order, and nothing but the zip directory is held.
//
// Layout, as PyTorchStreamWriter (caffe2/serialize/inline_container.cc) writes it and
// torch_checkpoint.h reads it (formats.md §3):
//   <prefix>/data.pkl    protocol-2 pickle: OrderedDict of name -> _rebuild_tensor_v2(
//                        persistent_id(("storage", torch.<Type>Storage, "<key>", "cpu", numel)),
//                        0, shape, row-major strides, False, OrderedDict()); dtypes without a
//                        legacy storage class (float8, uint16/32/64) use _rebuild_tensor_v3 on a
//                        torch.UntypedStorage with the dtype as last argument, as torch >= 2.1 does
//   <prefix>/byteorder   "little"
//   <prefix>/data/<key>  one contiguous storage per tensor, keys "0", "1", ... in tensor order
//   <prefix>/version     "3\n"
// Records are stored (method 0), their data 64-byte aligned through an "FB" padding extra field,
// each followed by a data descriptor that carries its CRC-32 and sizes (general purpose flag bit 3,
// as torch sets it), so a record's header is written before its bytes are seen. ZIP64 fields are
// used exactly where a 32-bit field overflows (records or offsets past 4 GiB, over 65534 records).
#ifndef MODELSMITH_WORKERS_FORMATS_TORCH_WRITER_H_
#define MODELSMITH_WORKERS_FORMATS_TORCH_WRITER_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/storage/object_store.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

struct TorchTensorEntry {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
};

// INVALID_ARGUMENT (TORCH_DTYPE_UNSUPPORTED) for a dtype torch has no tensor type for (F4, F6).
absl::Status CheckTorchWritable(DType dtype);

// The data.pkl of a state dict holding `tensors` in order, tensor i in storage "i".
// REQUIRES: CheckTorchWritable for every dtype.
std::string TorchStateDictPickle(const std::vector<TorchTensorEntry>& tensors);

class TorchZipWriter {
 public:
  // `archive_prefix` is the records' top directory (torch uses the file name without extension).
  TorchZipWriter(ObjectWriter& out, std::string archive_prefix);

  // A whole record from memory ("data.pkl", "byteorder", "version"); `name` is under the prefix.
  absl::Status AddRecord(const std::string& name, std::span<const std::byte> data);

  // A record of `size` bytes streamed in pieces: Begin, Append..., End. End fails (INTERNAL) when
  // the pieces did not add up to `size`.
  absl::Status BeginRecord(const std::string& name, uint64_t size);
  absl::Status AppendToRecord(std::span<const std::byte> data);
  absl::Status EndRecord();

  // The central directory and end records. No call is allowed after it.
  absl::Status Finish();

  uint64_t bytes_written() const { return offset_; }

 private:
  struct Entry {
    std::string name;
    uint64_t header_offset;
    uint64_t size;
    uint32_t crc32;
  };
  absl::Status Put(const std::string& bytes);

  ObjectWriter& out_;
  std::string prefix_;
  uint64_t offset_ = 0;
  std::vector<Entry> entries_;
  bool in_record_ = false;
  bool record_zip64_ = false;
  uint64_t record_size_ = 0;
  uint32_t record_crc_ = 0;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_TORCH_WRITER_H_
