#include "workers/jobs/bisect/bisect_chunk_writer.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/formats/gguf.h"
#include "workers/formats/safetensors.h"
#include "workers/formats/tensor_reader.h"
#include "workers/formats/torch_checkpoint.h"
#include "workers/formats/torch_writer.h"
#include "workers/jobs/core/paced_copy.h"

namespace modelsmith {
namespace {

// Contiguous torch tensors are read and checksummed in pieces of this size.
constexpr uint64_t kTorchPieceBytes = 16 << 20;

absl::Status AppendString(PipelinedWriter& out, const std::string& bytes) {
  return out.Append({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
}

absl::Status Mismatch(const RandomAccessObject& written, absl::string_view what) {
  return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                   absl::StrCat("chunk '", written.uri(), "' as written does not match its plan: ", what));
}

absl::StatusOr<WrittenObject> WriteSafetensorsChunk(const ModelView& model, const std::vector<TensorInfo>& tensors,
                                                    PipelinedWriter& out, ChunkIo io) {
  std::vector<SafetensorsEntry> entries;
  for (const TensorInfo& t : tensors) entries.push_back({t.name, t.dtype, t.shape, t.size_bytes});
  SortLikeReferenceWriter(entries);
  std::map<std::string, const TensorInfo*> by_name;
  for (const TensorInfo& t : tensors) by_name[t.name] = &t;
  std::map<std::string, std::string> metadata = model.metadata;
  metadata.try_emplace("format", "pt");
  const std::string header = SerializeSafetensorsHeader(entries, metadata);
  if (absl::Status s = AppendString(out, header); !s.ok()) return s;
  uint64_t size = header.size();
  for (const SafetensorsEntry& e : entries) {
    const TensorInfo& t = *by_name.at(e.name);
    if (absl::Status s = CopyTensorBytes(t, *model.files[t.file_index].object, out, io.tracker, io.pace, io.context);
        !s.ok()) {
      return Annotate(s, absl::StrCat("copying tensor '", t.name, "'"));
    }
    io.tracker.AddTensors(1);
    size += t.size_bytes;
  }
  ObjectChecker check = [entries = std::move(entries)](const RandomAccessObject& written) -> absl::Status {
    absl::StatusOr<SafetensorsHeader> read = ReadSafetensorsHeader(written);
    if (!read.ok()) return Annotate(read.status(), "verifying the written chunk");
    if (read->tensors.size() != entries.size()) return Mismatch(written, "tensor count");
    for (size_t k = 0; k < entries.size(); ++k) {
      const TensorInfo& got = read->tensors[k];
      if (got.name != entries[k].name || got.dtype != entries[k].dtype || got.shape != entries[k].shape ||
          got.size_bytes != entries[k].size_bytes) {
        return Mismatch(written, absl::StrCat("tensor '", entries[k].name, "'"));
      }
    }
    return absl::OkStatus();
  };
  return WrittenObject{size, std::move(check)};
}

absl::StatusOr<WrittenObject> WriteGgufChunk(const ModelView& model, const std::vector<TensorInfo>& tensors,
                                             PipelinedWriter& out, ChunkIo io) {
  static const std::byte kZeros[256] = {};
  std::vector<GgufKv> kvs;
  for (const GgufKv& kv : model.gguf->kvs) {
    if (!absl::StartsWith(kv.key, "split.")) kvs.push_back(kv);
  }
  std::vector<GgufTensor> table;
  for (const TensorInfo& t : tensors) {
    GgufTensor g;
    g.name = t.name;
    g.ne.assign(t.shape.rbegin(), t.shape.rend());
    g.type = static_cast<GgmlType>(*t.ggml_type);
    g.size_bytes = t.size_bytes;
    table.push_back(std::move(g));
  }
  const uint32_t alignment = model.gguf->alignment;
  const std::string header = SerializeGgufHeader(kvs, table, alignment);
  if (absl::Status s = AppendString(out, header); !s.ok()) return s;
  uint64_t size = header.size();
  for (const TensorInfo& t : tensors) {
    if (absl::Status s = CopyTensorBytes(t, *model.files[t.file_index].object, out, io.tracker, io.pace, io.context);
        !s.ok()) {
      return Annotate(s, absl::StrCat("copying tensor '", t.name, "'"));
    }
    const uint64_t padding = GgufPadding(t.size_bytes, alignment);
    if (absl::Status s = out.Append({kZeros, static_cast<size_t>(padding)}); !s.ok()) return s;
    io.tracker.AddTensors(1);
    size += t.size_bytes + padding;
  }
  ObjectChecker check = [table = std::move(table)](const RandomAccessObject& written) {
    return CheckGgufTensorTable(written, table);
  };
  return WrittenObject{size, std::move(check)};
}

// Streams one tensor's logical bytes into the open record: in pieces when it is contiguous, in one
// read when it is a strided view (ReadTensorBytes gathers a view in a single call).
absl::Status AppendTorchTensor(const ModelView& model, const TensorInfo& t, TorchZipWriter& zip, ChunkIo io) {
  const RandomAccessObject& file = *model.files[t.file_index].object;
  const uint64_t piece_limit = t.strides.empty() ? kTorchPieceBytes : std::max<uint64_t>(t.size_bytes, 1);
  std::vector<std::byte> buffer(static_cast<size_t>(std::min(piece_limit, t.size_bytes)));
  for (uint64_t done = 0; done < t.size_bytes;) {
    if (absl::Status s = StopStatus(io.context); !s.ok()) return s;
    const uint64_t piece =
        t.strides.empty() ? io.pace.PieceBytes(std::min(piece_limit, t.size_bytes - done)) : t.size_bytes;
    if (absl::Status s = ReadTensorBytes(file, t, done, piece, buffer.data()); !s.ok()) return s;
    if (absl::Status s = zip.AppendToRecord({buffer.data(), static_cast<size_t>(piece)}); !s.ok()) return s;
    done += piece;
    io.tracker.AddBytes(piece);
    io.pace.Account(piece, [&] { return io.context.stop_requested(); });
  }
  return absl::OkStatus();
}

absl::StatusOr<WrittenObject> WriteTorchChunk(const ModelView& model, const std::vector<TensorInfo>& tensors,
                                              const std::string& prefix, PipelinedWriter& out, ChunkIo io) {
  std::vector<TorchTensorEntry> entries;
  for (const TensorInfo& t : tensors) {
    if (absl::Status s = CheckTorchWritable(t.dtype); !s.ok())
      return Annotate(s, absl::StrCat("tensor '", t.name, "'"));
    entries.push_back({t.name, t.dtype, t.shape});
  }
  TorchZipWriter zip(out, prefix);
  const std::string pickle = TorchStateDictPickle(entries);
  if (absl::Status s = zip.AddRecord("data.pkl", {reinterpret_cast<const std::byte*>(pickle.data()), pickle.size()});
      !s.ok())
    return s;
  const std::string byteorder = "little";
  if (absl::Status s =
          zip.AddRecord("byteorder", {reinterpret_cast<const std::byte*>(byteorder.data()), byteorder.size()});
      !s.ok()) {
    return s;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (absl::Status s = zip.BeginRecord(absl::StrCat("data/", i), tensors[i].size_bytes); !s.ok()) return s;
    if (absl::Status s = AppendTorchTensor(model, tensors[i], zip, io); !s.ok()) {
      return Annotate(s, absl::StrCat("copying tensor '", tensors[i].name, "'"));
    }
    if (absl::Status s = zip.EndRecord(); !s.ok()) return s;
    io.tracker.AddTensors(1);
  }
  const std::string version = "3\n";
  if (absl::Status s = zip.AddRecord("version", {reinterpret_cast<const std::byte*>(version.data()), version.size()});
      !s.ok())
    return s;
  if (absl::Status s = zip.Finish(); !s.ok()) return s;
  ObjectChecker check = [entries = std::move(entries)](const RandomAccessObject& written) -> absl::Status {
    absl::StatusOr<TorchCheckpoint> read = ReadTorchCheckpoint(written);
    if (!read.ok()) return Annotate(read.status(), "verifying the written chunk");
    if (read->tensors.size() != entries.size() || !read->aliases.empty()) return Mismatch(written, "tensor count");
    for (size_t k = 0; k < entries.size(); ++k) {
      const TensorInfo& got = read->tensors[k];
      if (got.name != entries[k].name || got.dtype != entries[k].dtype || got.shape != entries[k].shape ||
          !got.strides.empty()) {
        return Mismatch(written, absl::StrCat("tensor '", entries[k].name, "'"));
      }
    }
    return absl::OkStatus();
  };
  return WrittenObject{zip.bytes_written(), std::move(check)};
}

}  // namespace

absl::StatusOr<WrittenObject> WriteChunkFile(const ModelView& model, const std::vector<TensorInfo>& tensors,
                                             const std::string& torch_prefix, PipelinedWriter& out, ChunkIo io) {
  if (model.gguf) return WriteGgufChunk(model, tensors, out, io);
  if (model.is_torch()) return WriteTorchChunk(model, tensors, torch_prefix, out, io);
  return WriteSafetensorsChunk(model, tensors, out, io);
}

}  // namespace modelsmith
