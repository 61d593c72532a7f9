#include "workers/jobs/lora_merge/lora_merge_files.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/formats/gguf.h"
#include "workers/formats/safetensors.h"
#include "workers/jobs/core/paced_copy.h"
#include "workers/storage/memory_writer.h"

namespace modelsmith {
namespace {

constexpr uint64_t kStagingQueueBytes = 32 << 20;

// What becomes of a base tensor in the output.
enum class Fate {
  kCopy,         // byte for byte
  kMerge,        // merged (in its stored type, or dequantized)
  kGroupMember,  // a tensor of a requantized group
  kDropped,      // a tensor of a dequantized group other than the one the weight is written at
};

Fate FateOf(const LoraMergePlan& plan, size_t i) {
  if (auto member = plan.group_member.find(i); member != plan.group_member.end()) {
    if (!plan.merged.at(member->second).dequantize_to) return Fate::kGroupMember;
    return member->second == i ? Fate::kMerge : Fate::kDropped;
  }
  return plan.merged.count(i) ? Fate::kMerge : Fate::kCopy;
}

// The file's tensors in data order.
std::vector<size_t> TensorsOf(const LoraMergePlan& plan, size_t file_index) {
  std::vector<size_t> order;
  for (size_t i = 0; i < plan.base.tensors.size(); ++i) {
    if (plan.base.tensors[i].file_index == file_index) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return plan.base.tensors[a].data_offset < plan.base.tensors[b].data_offset;
  });
  return order;
}

// Base tensor `t`, a member of the requantized group at `key`: the whole group is requantized when
// its first member comes, and each member's bytes are handed out once.
absl::StatusOr<std::string> GroupMemberBytes(const LoraMergePlan& plan, size_t key, const TensorInfo& t,
                                             const RandomAccessObject& source, MergeIo io, MergeState& state) {
  auto cached = state.group_bytes.find(key);
  if (cached == state.group_bytes.end()) {
    const MergeTensor& m = plan.merged.at(key);
    absl::StatusOr<std::vector<LowRankUpdate>> updates = LoadUpdates(m);
    if (!updates.ok()) return updates.status();
    state.records.push_back({&m, {}});
    absl::StatusOr<std::map<std::string, std::string>> group =
        RequantizeMergedGroup(m, *std::move(updates), source, io.pace, io.context, &state.records.back().figures);
    if (!group.ok()) return group.status();
    cached = state.group_bytes.emplace(key, *std::move(group)).first;
  }
  auto bytes = cached->second.find(t.name);
  if (bytes == cached->second.end() || bytes->second.size() != t.size_bytes) {
    return MakeError(absl::StatusCode::kInternal, "INTERNAL",
                     absl::StrCat("requantized group has no tensor '", t.name, "' of its size"), {{"tensor", t.name}});
  }
  std::string out = std::move(bytes->second);
  cached->second.erase(bytes);
  if (cached->second.empty()) state.group_bytes.erase(cached);
  io.tracker.AddBytes(t.size_bytes);
  return out;
}

absl::Status AppendString(PipelinedWriter& out, const std::string& bytes) {
  return out.Append({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
}

// Appends the new bytes of base tensor `i` (fate kMerge or kGroupMember).
absl::Status WriteNewTensor(const LoraMergePlan& plan, size_t i, const RandomAccessObject& source, PipelinedWriter& out,
                            MergeIo io, MergeState& state) {
  const TensorInfo& t = plan.base.tensors[i];
  if (auto member = plan.group_member.find(i);
      member != plan.group_member.end() && !plan.merged.at(member->second).dequantize_to) {
    absl::StatusOr<std::string> bytes = GroupMemberBytes(plan, member->second, t, source, io, state);
    if (!bytes.ok()) return bytes.status();
    return AppendString(out, *bytes);
  }
  const MergeTensor& m = plan.merged.at(i);
  absl::StatusOr<std::vector<LowRankUpdate>> updates = LoadUpdates(m);
  if (!updates.ok()) return updates.status();
  state.records.push_back({&m, {}});
  if (m.reader != nullptr) {
    // A dequantized group's weight: its stored bytes are the group's, counted here.
    for (size_t j : m.group) io.tracker.AddBytes(plan.base.tensors[j].size_bytes);
  }
  return WriteMergedTensor(m, *updates, source, out, io.tracker, io.pace, io.context, &state.records.back().figures);
}

// The new bytes of base tensor `i` in memory, for a torch record whose CRC-32 must be known
// before its local header is written.
absl::StatusOr<std::string> StageNewTensor(const LoraMergePlan& plan, size_t i, const RandomAccessObject& source,
                                           MergeIo io, MergeState& state) {
  std::string bytes;
  PipelinedWriter staging(std::make_unique<MemoryWriter>(&bytes), kStagingQueueBytes);
  if (absl::Status s = WriteNewTensor(plan, i, source, staging, io, state); !s.ok()) {
    staging.Abort();
    return s;
  }
  if (absl::Status s = staging.Commit(); !s.ok()) return s;
  return bytes;
}

uint32_t Crc32(const std::string& bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (size_t at = 0; at < bytes.size();) {
    const uInt piece = static_cast<uInt>(std::min<size_t>(bytes.size() - at, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + at), piece);
    at += piece;
  }
  return static_cast<uint32_t>(crc);
}

using Patches = std::map<uint64_t, uint32_t>;  // absolute offset -> little-endian 32-bit value

void PutLe32(uint32_t v, std::byte* out) {
  for (int k = 0; k < 4; ++k) out[k] = static_cast<std::byte>((v >> (8 * k)) & 0xFF);
}

// Copies [offset, offset + length) of `source` with the patched fields in it replaced.
absl::Status CopyPatched(const RandomAccessObject& source, uint64_t offset, uint64_t length, const Patches& patches,
                         PipelinedWriter& out, MergeIo io) {
  const uint64_t end = offset + length;
  for (auto p = patches.lower_bound(offset > 3 ? offset - 3 : 0); p != patches.end() && p->first < end; ++p) {
    if (p->first < offset || p->first + 4 > end) {
      return MakeError(absl::StatusCode::kInternal, "INTERNAL",
                       absl::StrCat("zip field at ", p->first, " straddles a tensor's data"));
    }
    if (absl::Status s = CopyByteRange(source, offset, p->first - offset, out, io.tracker, io.pace, io.context);
        !s.ok())
      return s;
    std::byte field[4];
    PutLe32(p->second, field);
    if (absl::Status s = out.Append(field); !s.ok()) return s;
    io.tracker.AddBytes(4);
    offset = p->first + 4;
  }
  return CopyByteRange(source, offset, end - offset, out, io.tracker, io.pace, io.context);
}

// The written file must have the base file's size and its header (everything before the first
// tensor's data) byte for byte, patched fields aside, so its tensor table is the base's.
ObjectChecker MirrorCheck(const ModelFile& base, uint64_t header_bytes, Patches patches) {
  return [&base, header_bytes, patches = std::move(patches)](const RandomAccessObject& written) -> absl::Status {
    auto mismatch = [&](absl::string_view what) {
      return MakeError(
          absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
          absl::StrCat("'", written.uri(), "' as written does not match base file '", base.name, "': ", what),
          {{"file", base.name}});
    };
    if (written.size_bytes() != base.object->size_bytes()) return mismatch("size");
    std::string expected(header_bytes, '\0'), got(header_bytes, '\0');
    if (absl::Status s = base.object->ReadAt(0, header_bytes, reinterpret_cast<std::byte*>(expected.data())); !s.ok())
      return s;
    if (absl::Status s = written.ReadAt(0, header_bytes, reinterpret_cast<std::byte*>(got.data())); !s.ok()) return s;
    for (const auto& [offset, value] : patches) {
      if (offset + 4 <= header_bytes) PutLe32(value, reinterpret_cast<std::byte*>(expected.data() + offset));
    }
    if (expected != got) return mismatch("header");
    return absl::OkStatus();
  };
}

absl::StatusOr<WrittenFile> MirrorFile(const LoraMergePlan& plan, size_t file_index, PipelinedWriter& out, MergeIo io,
                                       MergeState& state) {
  const ModelFile& file = plan.base.files[file_index];
  const RandomAccessObject& source = *file.object;
  const std::vector<size_t> order = TensorsOf(plan, file_index);
  const uint64_t header_bytes = order.empty() ? source.size_bytes() : plan.base.tensors[order.front()].data_offset;
  // Everything between the tensors written anew is copied as it is: headers, padding, untouched
  // tensors, and in a torch archive its other records and views (which may overlap).
  std::vector<size_t> renewed;
  for (size_t i : order) {
    if (FateOf(plan, i) != Fate::kCopy) renewed.push_back(i);
  }
  Patches patches;
  uint64_t position = 0;
  size_t counted = 0;  // of `order`
  for (size_t i : renewed) {
    const TensorInfo& t = plan.base.tensors[i];
    if (t.data_offset < position) {
      return MakeError(absl::StatusCode::kInvalidArgument, "MODEL_TENSORS_OVERLAP",
                       absl::StrCat("tensor '", t.name, "' of '", file.name, "' overlaps the tensor before it"),
                       {{"tensor", t.name}});
    }
    std::optional<std::string> staged;
    if (auto crc = plan.crc_fields.find(i); crc != plan.crc_fields.end()) {
      absl::StatusOr<std::string> bytes = StageNewTensor(plan, i, source, io, state);
      if (!bytes.ok()) return bytes.status();
      const uint32_t value = Crc32(*bytes);
      for (uint64_t field : crc->second) patches[field] = value;
      staged = *std::move(bytes);
    }
    if (absl::Status s = CopyPatched(source, position, t.data_offset - position, patches, out, io); !s.ok()) return s;
    if (staged) {
      if (absl::Status s = AppendString(out, *staged); !s.ok()) return s;
    } else if (absl::Status s = WriteNewTensor(plan, i, source, out, io, state); !s.ok()) {
      return s;
    }
    position = t.data_offset + t.size_bytes;
    // Tensors count as done once the walk has passed their last byte.
    for (; counted < order.size() &&
           plan.base.tensors[order[counted]].data_offset + plan.base.tensors[order[counted]].size_bytes <= position;
         ++counted) {
      io.tracker.AddTensors(1);
    }
  }
  if (absl::Status s = CopyPatched(source, position, source.size_bytes() - position, patches, out, io); !s.ok())
    return s;
  io.tracker.AddTensors(order.size() - counted);
  return WrittenFile{source.size_bytes(), MirrorCheck(file, header_bytes, std::move(patches))};
}

DType FloatDType(GgmlType type) {
  return type == GgmlType::kF16 ? DType::kF16 : type == GgmlType::kBF16 ? DType::kBF16 : DType::kF32;
}

// Appends the tensors of a rewritten file in `order`, each followed by `padding(size)` zeros.
absl::Status WriteRewrittenTensors(const LoraMergePlan& plan, const std::vector<size_t>& order,
                                   const RandomAccessObject& source, const std::function<uint64_t(uint64_t)>& padding,
                                   PipelinedWriter& out, MergeIo io, MergeState& state) {
  static const std::byte kZeros[64] = {};
  for (size_t i : order) {
    const TensorInfo& t = plan.base.tensors[i];
    const Fate fate = FateOf(plan, i);
    if (fate == Fate::kDropped) {
      io.tracker.AddBytes(t.size_bytes);
    } else if (fate == Fate::kCopy) {
      if (absl::Status s = CopyByteRange(source, t.data_offset, t.size_bytes, out, io.tracker, io.pace, io.context);
          !s.ok()) {
        return Annotate(s, absl::StrCat("copying tensor '", t.name, "'"));
      }
    } else if (absl::Status s = WriteNewTensor(plan, i, source, out, io, state); !s.ok()) {
      return s;
    }
    io.tracker.AddTensors(1);
    if (fate == Fate::kDropped) continue;
    const uint64_t size = fate == Fate::kMerge ? MergedTensorBytes(plan.merged.at(i)) : t.size_bytes;
    if (absl::Status s = out.Append({kZeros, static_cast<size_t>(padding(size))}); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<WrittenFile> RewriteSafetensors(const LoraMergePlan& plan, size_t file_index, PipelinedWriter& out,
                                               MergeIo io, MergeState& state) {
  const ModelFile& file = plan.base.files[file_index];
  const std::vector<size_t> order = TensorsOf(plan, file_index);
  std::vector<SafetensorsEntry> entries;
  for (size_t i : order) {
    const TensorInfo& t = plan.base.tensors[i];
    const Fate fate = FateOf(plan, i);
    if (fate == Fate::kDropped) continue;
    if (fate == Fate::kMerge && plan.merged.at(i).dequantize_to) {
      const MergeTensor& m = plan.merged.at(i);
      entries.push_back({m.written_name(), FloatDType(*m.dequantize_to), m.written_shape(), MergedTensorBytes(m)});
    } else {
      entries.push_back({t.name, t.dtype, t.shape, t.size_bytes});
    }
  }
  const std::string header = SerializeSafetensorsHeader(entries, file.header.metadata);
  if (absl::Status s = AppendString(out, header); !s.ok()) return s;
  io.tracker.AddBytes(file.header.data_start);
  if (absl::Status s = WriteRewrittenTensors(
          plan, order, *file.object, [](uint64_t) { return 0; }, out, io, state);
      !s.ok())
    return s;
  uint64_t size = header.size();
  for (const SafetensorsEntry& e : entries) size += e.size_bytes;
  ObjectChecker check = [entries = std::move(entries)](const RandomAccessObject& written) -> absl::Status {
    absl::StatusOr<SafetensorsHeader> read = ReadSafetensorsHeader(written);
    if (!read.ok()) return Annotate(read.status(), "verifying the written safetensors file");
    bool same = read->tensors.size() == entries.size();
    for (size_t k = 0; same && k < entries.size(); ++k) {
      const TensorInfo& got = read->tensors[k];
      same = got.name == entries[k].name && got.dtype == entries[k].dtype && got.shape == entries[k].shape &&
             got.size_bytes == entries[k].size_bytes;
    }
    if (!same) {
      return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                       absl::StrCat("'", written.uri(), "': the written tensor table is not the planned one"));
    }
    return absl::OkStatus();
  };
  return WrittenFile{size, std::move(check)};
}

absl::StatusOr<WrittenFile> RewriteGguf(const LoraMergePlan& plan, size_t file_index, PipelinedWriter& out, MergeIo io,
                                        MergeState& state) {
  const ModelFile& file = plan.base.files[file_index];
  absl::StatusOr<GgufFile> part = ReadGgufHeader(*file.object);
  if (!part.ok()) return part.status();
  std::map<std::string, size_t> index_of;
  for (size_t i : TensorsOf(plan, file_index)) index_of[plan.base.tensors[i].name] = i;
  std::vector<GgufTensor> tensors = part->tensors;
  std::vector<size_t> order;
  for (GgufTensor& g : tensors) {
    auto it = index_of.find(g.name);
    if (it == index_of.end()) {
      return MakeError(absl::StatusCode::kInternal, "INTERNAL",
                       absl::StrCat("GGUF tensor '", g.name, "' is not in the model's table"));
    }
    order.push_back(it->second);
    if (auto merged = plan.merged.find(it->second); merged != plan.merged.end() && merged->second.dequantize_to) {
      g.type = *merged->second.dequantize_to;
      g.size_bytes = MergedTensorBytes(merged->second);
    }
  }
  const uint32_t alignment = part->alignment;
  const std::string header = SerializeGgufHeader(part->kvs, tensors, alignment);
  if (absl::Status s = AppendString(out, header); !s.ok()) return s;
  io.tracker.AddBytes(part->data_start);
  const auto padding = [alignment](uint64_t size) { return GgufPadding(size, alignment); };
  if (absl::Status s = WriteRewrittenTensors(plan, order, *file.object, padding, out, io, state); !s.ok()) return s;
  uint64_t base_tensor_bytes = 0;
  for (size_t i : order) base_tensor_bytes += plan.base.tensors[i].size_bytes;
  io.tracker.AddBytes(file.object->size_bytes() -
                      std::min(file.object->size_bytes(), part->data_start + base_tensor_bytes));  // padding
  uint64_t size = header.size();
  for (const GgufTensor& g : tensors) size += g.size_bytes + padding(g.size_bytes);
  ObjectChecker check = [tensors = std::move(tensors)](const RandomAccessObject& written) {
    return CheckGgufTensorTable(written, tensors);
  };
  return WrittenFile{size, std::move(check)};
}

}  // namespace

absl::StatusOr<WrittenFile> WriteMergedFile(const LoraMergePlan& plan, size_t file_index, PipelinedWriter& out,
                                            MergeIo io, MergeState& state) {
  if (!plan.rewritten_files.count(file_index)) return MirrorFile(plan, file_index, out, io, state);
  if (plan.gguf()) return RewriteGguf(plan, file_index, out, io, state);
  return RewriteSafetensors(plan, file_index, out, io, state);
}

std::map<std::string, WrittenTensor> WrittenTensors(const LoraMergePlan& plan) {
  std::map<std::string, WrittenTensor> written;
  for (size_t i = 0; i < plan.base.tensors.size(); ++i) {
    const TensorInfo& t = plan.base.tensors[i];
    switch (FateOf(plan, i)) {
      case Fate::kDropped: break;
      case Fate::kMerge: {
        const MergeTensor& m = plan.merged.at(i);
        written[m.written_name()] = {t.file_index, MergedTensorBytes(m)};
        break;
      }
      default: written[t.name] = {t.file_index, t.size_bytes}; break;
    }
  }
  return written;
}

}  // namespace modelsmith
