// ModelView: one checkpoint, whatever its files, as a list of tensors with on-demand bytes.
//
// Opens a single .safetensors file, a torch.save checkpoint (.bin/.pt/.pth/.ckpt, read without
// executing it: torch_checkpoint.h), a .gguf file (a split one, "<prefix>-00001-of-00003.gguf"
// with split.* keys as gguf-split writes, as one model from any of its parts; the metadata is the
// first part's), a Hugging Face sharded checkpoint
// through its index
// ("model.safetensors.index.json", variants like "model.safetensors.index.fp16.json"
// included; "pytorch_model.bin.index.json" for torch shards), or a directory/prefix holding
// exactly one safetensors index or file, or else (no safetensors there, as transformers prefers
// safetensors) exactly one torch index or checkpoint. Only headers are read.
//
// Index layout (huggingface_hub serialization/_base.py; formats.md §2):
//   {"metadata": {"total_size": <bytes>, ...}, "weight_map": {"<tensor>": "<shard file>"}}
// Shard names must be plain file names in the index's directory. Every mapped shard must exist,
// every mapped tensor must be in its shard, and every tensor of a shard must be in the map.
#ifndef MODELSMITH_WORKERS_FORMATS_MODEL_VIEW_H_
#define MODELSMITH_WORKERS_FORMATS_MODEL_VIEW_H_

#include "absl/strings/string_view.h"
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "workers/formats/gguf.h"
#include "workers/formats/safetensors.h"
#include "workers/formats/torch_checkpoint.h"
#include "workers/storage/storage_router.h"

namespace modelsmith {

struct ModelFile {
  std::string uri;
  std::string name;  // base name
  std::unique_ptr<RandomAccessObject> object;
  SafetensorsHeader header;
};

struct ModelView {
  // "safetensors", "safetensors-sharded", "torch", "torch-sharded" or "gguf"
  std::string format;
  std::string uri;        // what was opened (canonical)
  std::string index_uri;  // sharded only
  std::vector<ModelFile> files;
  // State-dict order: file by file in name order, within a file by data offset (the
  // reference writer's order). TensorInfo::file_index points into `files`.
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;  // __metadata__ of the first file
  nlohmann::json index_metadata;                // the index's "metadata" object (sharded only)
  uint64_t tensor_bytes = 0;                    // sum of tensor sizes
  uint64_t file_bytes = 0;                      // sum of file sizes
  std::optional<GgufFile> gguf;                 // the header, for GGUF input
  // torch input: names that repeat an earlier tensor (left out of `tensors`), and entries of the
  // state dict that are not tensors.
  std::vector<TensorAlias> aliases;
  std::vector<std::string> skipped_entries;

  bool is_torch() const { return format == "torch" || format == "torch-sharded"; }
};

// NOT_FOUND when nothing is at `location`; INVALID_ARGUMENT (reasons SAFETENSORS_*,
// INDEX_*, MODEL_*) naming the file, tensor and field for malformed input.
absl::StatusOr<ModelView> OpenModel(const Location& location);

// config.json beside the model's files: nullopt when there is none (or the model is GGUF);
// INVALID_ARGUMENT (MODEL_CONFIG_INVALID) when it is not a JSON object or over 16 MiB.
absl::StatusOr<std::optional<nlohmann::json>> ReadModelConfig(ObjectStore& store, const ModelView& model);

// A JSON object file at `uri`: nullopt when there is none; INVALID_ARGUMENT (MODEL_CONFIG_INVALID)
// naming the file when it is not a JSON object or over `max_bytes`.
// The whole of a small object: nullopt when it does not exist, INVALID_ARGUMENT
// `too_large_reason` naming the file when it holds more than `max_bytes`.
absl::StatusOr<std::optional<std::string>> ReadSmallObject(ObjectStore& store, const std::string& uri,
                                                           uint64_t max_bytes, absl::string_view too_large_reason);

absl::StatusOr<std::optional<nlohmann::json>> ReadJsonObject(ObjectStore& store, const std::string& uri,
                                                             uint64_t max_bytes);

// True for "*.safetensors.index.json" and variant forms "*.safetensors.index.<variant>.json".
bool IsSafetensorsIndexName(absl::string_view name);
// The same for torch shards: "*.bin.index.json", "*.bin.index.<variant>.json".
bool IsTorchIndexName(absl::string_view name);
// .bin, .pt, .pth, .ckpt
bool HasTorchExtension(absl::string_view name);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_MODEL_VIEW_H_
