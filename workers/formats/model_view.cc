#include "workers/formats/model_view.h"

#include <cstdio>
#include <cstring>
#include <set>
#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "workers/common/error.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

// A file of the model that could not be opened: MODEL_FILE_UNREADABLE naming it, except that a
// path the store refused as outside the roots keeps saying so.
absl::Status Unreadable(const absl::Status& status, const std::string& uri) {
  const std::string reason = ReasonOf(status) == "PATH_OUTSIDE_ROOTS" ? "PATH_OUTSIDE_ROOTS" : "MODEL_FILE_UNREADABLE";
  return WithReason(status, reason, {{"file", uri}});
}

using nlohmann::json;

constexpr uint64_t kMaxIndexBytes = 64 << 20;

absl::Status IndexError(absl::string_view reason, absl::string_view index, absl::string_view tensor,
                        absl::string_view message) {
  ErrorContext context{{"file", std::string(index)}};
  if (!tensor.empty()) context["tensor"] = std::string(tensor);
  return MakeError(absl::StatusCode::kInvalidArgument, reason, absl::StrCat("index '", index, "': ", message),
                   std::move(context));
}

absl::StatusOr<ModelFile> OpenSafetensorsFile(ObjectStore& store, const std::string& uri) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(uri);
  if (!object.ok()) return Unreadable(object.status(), uri);
  absl::StatusOr<SafetensorsHeader> header = ReadSafetensorsHeader(**object);
  if (!header.ok()) return header.status();
  ModelFile file;
  file.uri = uri;
  file.name = std::string(BaseName(uri));
  file.object = *std::move(object);
  file.header = *std::move(header);
  return file;
}

// A torch checkpoint as a ModelFile: its tensors in `header.tensors` (state-dict order), its
// aliases and skipped entries in the out-parameters.
absl::StatusOr<ModelFile> OpenTorchFile(ObjectStore& store, const std::string& uri, std::vector<TensorAlias>* aliases,
                                        std::vector<std::string>* skipped) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(uri);
  if (!object.ok()) return Unreadable(object.status(), uri);
  absl::StatusOr<TorchCheckpoint> checkpoint = ReadTorchCheckpoint(**object);
  if (!checkpoint.ok()) return checkpoint.status();
  ModelFile file;
  file.uri = uri;
  file.name = std::string(BaseName(uri));
  file.object = *std::move(object);
  file.header.tensors = std::move(checkpoint->tensors);
  aliases->insert(aliases->end(), checkpoint->aliases.begin(), checkpoint->aliases.end());
  skipped->insert(skipped->end(), checkpoint->skipped.begin(), checkpoint->skipped.end());
  return file;
}

absl::StatusOr<ModelFile> OpenShardFile(ObjectStore& store, const std::string& uri, bool torch, ModelView& view) {
  return torch ? OpenTorchFile(store, uri, &view.aliases, &view.skipped_entries) : OpenSafetensorsFile(store, uri);
}

void AddFile(ModelView& view, ModelFile file) {
  const uint32_t index = static_cast<uint32_t>(view.files.size());
  for (TensorInfo t : file.header.tensors) {
    t.file_index = index;
    view.tensor_bytes += t.size_bytes;
    view.tensors.push_back(std::move(t));
  }
  view.file_bytes += file.object->size_bytes();
  view.files.push_back(std::move(file));
}

absl::StatusOr<ModelView> OpenSingle(ObjectStore& store, const std::string& uri, bool torch) {
  ModelView view;
  absl::StatusOr<ModelFile> file = OpenShardFile(store, uri, torch, view);
  if (!file.ok()) return file.status();
  view.format = torch ? "torch" : "safetensors";
  view.uri = uri;
  view.metadata = file->header.metadata;
  AddFile(view, *std::move(file));
  return view;
}

// The tensors of one GGUF file as ModelView tensors.
ModelFile GgufModelFile(const std::string& uri, const GgufFile& header, std::unique_ptr<RandomAccessObject> object) {
  ModelFile file;
  file.uri = uri;
  file.name = std::string(BaseName(uri));
  file.header.data_start = header.data_start;
  for (const GgufTensor& g : header.tensors) {
    TensorInfo t;
    t.name = g.name;
    t.shape = g.Shape();
    t.data_offset = header.data_start + g.offset;
    t.size_bytes = g.size_bytes;
    t.ggml_type = static_cast<uint32_t>(g.type);
    switch (g.type) {
      case GgmlType::kF32: t.dtype = DType::kF32; break;
      case GgmlType::kF16: t.dtype = DType::kF16; break;
      case GgmlType::kBF16: t.dtype = DType::kBF16; break;
      default: t.dtype = DType::kU8; break;
    }
    file.header.tensors.push_back(std::move(t));
  }
  file.object = std::move(object);
  return file;
}

absl::Status SplitError(const std::string& file, absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, "GGUF_SPLIT_INVALID", absl::StrCat("'", file, "': ", message),
                   {{"file", file}});
}

// "<prefix>-00002-of-00003.gguf" -> {"<prefix>", 2, 3}; nullopt for other names.
struct SplitName {
  std::string prefix;
  uint64_t number = 0, count = 0;
};
std::optional<SplitName> ParseSplitName(absl::string_view uri) {
  // gguf-split's llama_split_path: "%s-%05d-of-%05d.gguf".
  if (!absl::EndsWith(uri, ".gguf") || uri.size() < 20) return std::nullopt;
  const absl::string_view tail = uri.substr(uri.size() - 20);  // "-00002-of-00003.gguf"
  if (tail[0] != '-' || tail.substr(6, 4) != "-of-") return std::nullopt;
  SplitName name;
  for (char c : tail.substr(1, 5)) {
    if (c < '0' || c > '9') return std::nullopt;
    name.number = name.number * 10 + (c - '0');
  }
  for (char c : tail.substr(10, 5)) {
    if (c < '0' || c > '9') return std::nullopt;
    name.count = name.count * 10 + (c - '0');
  }
  name.prefix = std::string(uri.substr(0, uri.size() - 20));
  return name;
}

absl::StatusOr<ModelView> OpenGguf(ObjectStore& store, const std::string& uri) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(uri);
  if (!object.ok()) return Unreadable(object.status(), uri);
  absl::StatusOr<GgufFile> header = ReadGgufHeader(**object);
  if (!header.ok()) return header.status();
  ModelView view;
  view.format = "gguf";
  view.uri = uri;
  if (const GgufKv* name = header->Find("general.name")) {
    if (std::optional<std::string> text = name->AsString()) view.metadata["general.name"] = *text;
  }
  const GgufKv* split_count = header->Find("split.count");
  const std::optional<uint64_t> count = split_count != nullptr ? split_count->AsUnsigned() : std::nullopt;
  if (!count || *count <= 1) {
    AddFile(view, GgufModelFile(uri, *header, *std::move(object)));
    view.gguf = *std::move(header);
    return view;
  }
  // A split model (gguf-split): every part, whichever was named, read as one model in part order.
  std::optional<SplitName> name = ParseSplitName(uri);
  if (!name || name->count != *count || name->number == 0 || name->number > *count) {
    return SplitError(uri, absl::StrCat("it is part of a ", *count, "-way split but is not named like <prefix>",
                                        GgufSplitUri("", 1, *count)));
  }
  uint64_t expected_tensors = 0;
  std::set<std::string> names;
  for (uint64_t no = 0; no < *count; ++no) {
    const std::string part_uri = GgufSplitUri(name->prefix, no + 1, *count);
    absl::StatusOr<std::unique_ptr<RandomAccessObject>> part =
        part_uri == uri ? std::move(object) : store.OpenForRead(part_uri);
    if (!part.ok()) return Unreadable(part.status(), part_uri);
    absl::StatusOr<GgufFile> part_header = part_uri == uri ? *std::move(header) : ReadGgufHeader(**part);
    if (!part_header.ok()) return part_header.status();
    const GgufKv* part_no = part_header->Find("split.no");
    const GgufKv* part_count = part_header->Find("split.count");
    if (part_no == nullptr || part_no->AsUnsigned() != no || part_count == nullptr ||
        part_count->AsUnsigned() != *count) {
      return SplitError(part_uri, absl::StrCat("expected split.no ", no, " of split.count ", *count));
    }
    if (no == 0) {
      const GgufKv* total = part_header->Find("split.tensors.count");
      if (total == nullptr || !total->AsUnsigned())
        return SplitError(part_uri, "the first part has no split.tensors.count");
      expected_tensors = *total->AsUnsigned();
    }
    for (const GgufTensor& t : part_header->tensors) {
      if (!names.insert(t.name).second)
        return SplitError(part_uri, absl::StrCat("tensor '", t.name, "' is in two parts"));
    }
    AddFile(view, GgufModelFile(part_uri, *part_header, *std::move(part)));
    if (no == 0) view.gguf = *std::move(part_header);  // the model's metadata is the first part's
  }
  if (names.size() != expected_tensors) {
    return SplitError(view.files.front().uri, absl::StrCat("split.tensors.count says ", expected_tensors,
                                                           " tensors, the parts hold ", names.size()));
  }
  view.uri = view.files.front().uri;
  return view;
}

bool StartsWithGgufMagic(ObjectStore& store, const std::string& uri) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(uri);
  if (!object.ok() || (*object)->size_bytes() < 4) return false;
  char magic[4];
  return (*object)->ReadAt(0, 4, reinterpret_cast<std::byte*>(magic)).ok() && std::memcmp(magic, "GGUF", 4) == 0;
}

absl::StatusOr<ModelView> OpenSharded(ObjectStore& store, const std::string& index_uri, bool torch) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(index_uri);
  if (!object.ok()) return Unreadable(object.status(), index_uri);
  if ((*object)->size_bytes() > kMaxIndexBytes) {
    return IndexError(
        "INDEX_TOO_LARGE", index_uri, "",
        absl::StrCat("the index has ", (*object)->size_bytes(), " bytes, more than the limit of ", kMaxIndexBytes));
  }
  std::string text((*object)->size_bytes(), '\0');
  if (absl::Status s = (*object)->ReadAt(0, text.size(), reinterpret_cast<std::byte*>(text.data())); !s.ok()) {
    return s;
  }
  json index = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) {
    return IndexError("INDEX_INVALID_JSON", index_uri, "", "not a JSON object");
  }
  if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
    return IndexError("INDEX_INVALID", index_uri, "", "'weight_map' is missing or not an object");
  }
  if (index.contains("metadata") && !index["metadata"].is_object()) {
    return IndexError("INDEX_INVALID", index_uri, "", "'metadata' is not an object");
  }

  // Shard files in name order (which is shard order for HF names), each with the tensors the
  // weight map places in it.
  std::vector<std::string> shard_names;
  std::unordered_map<std::string, std::set<std::string>> expected;
  for (const auto& [tensor, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) {
      return IndexError("INDEX_INVALID", index_uri, tensor, "the shard name is not a string");
    }
    const std::string name = shard.get<std::string>();
    if (name.empty() || name == "." || name == ".." || absl::StrContains(name, '/') || absl::StrContains(name, '\\') ||
        absl::StrContains(name, '\0')) {
      return IndexError("INDEX_INVALID_SHARD_NAME", index_uri, tensor,
                        absl::StrCat("shard name '", name, "' is not a plain file name in the index's directory"));
    }
    auto [it, inserted] = expected.try_emplace(name);
    if (inserted) shard_names.push_back(name);
    it->second.insert(tensor);
  }
  if (shard_names.empty()) return IndexError("INDEX_EMPTY", index_uri, "", "the weight map is empty");
  std::sort(shard_names.begin(), shard_names.end());

  ModelView view;
  view.format = torch ? "torch-sharded" : "safetensors-sharded";
  view.uri = index_uri;
  view.index_uri = index_uri;
  view.index_metadata = index.value("metadata", json::object());
  const std::string dir(ParentUri(index_uri));
  for (const std::string& name : shard_names) {
    const std::string uri = JoinUri(dir, name);
    const size_t aliases_before = view.aliases.size();
    absl::StatusOr<ModelFile> file = OpenShardFile(store, uri, torch, view);
    if (!file.ok()) {
      if (absl::IsNotFound(file.status())) {
        return MakeError(
            absl::StatusCode::kNotFound, "INDEX_MISSING_SHARD",
            absl::StrCat("index '", index_uri, "' maps tensors to shard '", name, "', which does not exist"),
            {{"file", uri}});
      }
      return file.status();
    }
    std::set<std::string>& wanted = expected[name];
    for (const TensorInfo& t : file->header.tensors) {
      if (wanted.erase(t.name) == 0) {
        return IndexError(
            "INDEX_MISMATCH", index_uri, t.name,
            absl::StrCat("tensor '", t.name, "' is in shard '", name, "' but the weight map does not place it there"));
      }
    }
    // A tied weight is in the weight map under each of its names.
    for (size_t i = aliases_before; i < view.aliases.size(); ++i) wanted.erase(view.aliases[i].name);
    if (!wanted.empty()) {
      return IndexError("INDEX_MISMATCH", index_uri, *wanted.begin(),
                        absl::StrCat("the weight map places tensor '", *wanted.begin(), "' in shard '", name,
                                     "', which does not hold it"));
    }
    if (view.files.empty()) view.metadata = file->header.metadata;
    AddFile(view, *std::move(file));
  }
  return view;
}

}  // namespace

bool IsSafetensorsIndexName(absl::string_view name) {
  return absl::EndsWith(name, ".json") && absl::StrContains(name, ".safetensors.index");
}

bool IsTorchIndexName(absl::string_view name) {
  return absl::EndsWith(name, ".json") && absl::StrContains(name, ".bin.index");
}

bool HasTorchExtension(absl::string_view name) {
  for (const char* ext : {".bin", ".pt", ".pth", ".ckpt"}) {
    if (absl::EndsWith(name, ext)) return true;
  }
  return false;
}

namespace {

bool StartsLikeTorch(ObjectStore& store, const std::string& uri) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(uri);
  if (!object.ok()) return false;
  std::string head(std::min<uint64_t>(16, (*object)->size_bytes()), '\0');
  return (*object)->ReadAt(0, head.size(), reinterpret_cast<std::byte*>(head.data())).ok() &&
         LooksLikeTorchCheckpoint(head);
}

}  // namespace

absl::StatusOr<std::optional<std::string>> ReadSmallObject(ObjectStore& store, const std::string& uri,
                                                           uint64_t max_bytes, absl::string_view too_large_reason) {
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store.OpenForRead(uri);
  if (absl::IsNotFound(object.status())) return std::nullopt;
  if (!object.ok()) return Unreadable(object.status(), uri);
  if ((*object)->size_bytes() > max_bytes) {
    return MakeError(absl::StatusCode::kInvalidArgument, too_large_reason,
                     absl::StrCat("'", uri, "' has ", (*object)->size_bytes(), " bytes, more than ", max_bytes),
                     {{"file", uri}});
  }
  std::string bytes((*object)->size_bytes(), '\0');
  if (absl::Status s = (*object)->ReadAt(0, bytes.size(), reinterpret_cast<std::byte*>(bytes.data())); !s.ok())
    return s;
  return bytes;
}

absl::StatusOr<std::optional<nlohmann::json>> ReadJsonObject(ObjectStore& store, const std::string& uri,
                                                             uint64_t max_bytes) {
  absl::StatusOr<std::optional<std::string>> text = ReadSmallObject(store, uri, max_bytes, "MODEL_CONFIG_INVALID");
  if (!text.ok()) return text.status();
  if (!*text) return std::nullopt;
  json value = json::parse(**text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded() || !value.is_object()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "MODEL_CONFIG_INVALID",
                     absl::StrCat("'", uri, "' is not a JSON object"), {{"file", uri}});
  }
  return value;
}

absl::StatusOr<std::optional<nlohmann::json>> ReadModelConfig(ObjectStore& store, const ModelView& model) {
  constexpr uint64_t kMaxConfigBytes = 16 << 20;
  if (model.gguf || model.files.empty()) return std::nullopt;
  return ReadJsonObject(store, JoinUri(ParentUri(model.files.front().uri), "config.json"), kMaxConfigBytes);
}

absl::StatusOr<ModelView> OpenModel(const Location& location) {
  ObjectStore& store = *location.store;
  const std::string& uri = location.uri;
  if (IsSafetensorsIndexName(BaseName(uri))) return OpenSharded(store, uri, /*torch=*/false);
  if (IsTorchIndexName(BaseName(uri))) return OpenSharded(store, uri, /*torch=*/true);
  if (absl::StatusOr<uint64_t> size = store.SizeOf(uri); size.ok()) {
    if (absl::EndsWith(uri, ".json")) {
      return MakeError(absl::StatusCode::kInvalidArgument, "MODEL_UNKNOWN_FORMAT",
                       absl::StrCat("'", uri,
                                    "' is a JSON file but not a safetensors or torch index "
                                    "(expected a name like model.safetensors.index.json)"),
                       {{"file", uri}});
    }
    if (absl::EndsWith(uri, ".gguf") || StartsWithGgufMagic(store, uri)) return OpenGguf(store, uri);
    if (StartsLikeTorch(store, uri)) return OpenSingle(store, uri, /*torch=*/true);
    return OpenSingle(store, uri, /*torch=*/false);
  }
  // A directory or prefix: one safetensors index or file, or else one torch index or checkpoint.
  absl::StatusOr<std::vector<ObjectEntry>> entries = store.List(uri);
  if (!entries.ok()) return entries.status();
  std::vector<std::string> indexes, singles, torch_indexes, torch_singles;
  for (const ObjectEntry& e : *entries) {
    if (absl::StrContains(e.relative_name, '/') || store.IsStagingName(e.relative_name)) continue;
    if (IsSafetensorsIndexName(e.relative_name))
      indexes.push_back(e.uri);
    else if (absl::EndsWith(e.relative_name, ".safetensors"))
      singles.push_back(e.uri);
    else if (IsTorchIndexName(e.relative_name))
      torch_indexes.push_back(e.uri);
    else if (HasTorchExtension(e.relative_name))
      torch_singles.push_back(e.uri);
  }
  const bool torch = indexes.empty() && singles.empty();
  if (torch) {
    indexes = std::move(torch_indexes);
    singles = std::move(torch_singles);
  }
  if (indexes.size() == 1) return OpenSharded(store, indexes[0], torch);
  if (indexes.empty() && singles.size() == 1) return OpenSingle(store, singles[0], torch);
  if (indexes.empty() && singles.empty()) {
    return MakeError(absl::StatusCode::kNotFound, "MODEL_NOT_FOUND",
                     absl::StrCat("no safetensors or torch checkpoint or index at '", uri, "'"), {{"uri", uri}});
  }
  return MakeError(absl::StatusCode::kInvalidArgument, "MODEL_AMBIGUOUS",
                   absl::StrCat("'", uri, "' holds ", indexes.size(), " indexes and ", singles.size(),
                                torch ? " torch checkpoints" : " safetensors files", "; name the one to use"),
                   {{"uri", uri}});
}

}  // namespace modelsmith
