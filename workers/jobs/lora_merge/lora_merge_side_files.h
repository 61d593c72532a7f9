// The files a LoRA merge's output directory gets beside the model files (safetensors and torch
// bases): every other file of the base's directory, so the output loads as the base did
// (config.json, tokenizer files, generation_config.json, quanto_qmap.json, ...).
//
// Copied as they are, except after a DEQUANTIZE merge, which changes what is stored:
//   the index          weight_map lists the written tensors (a group's companions are gone, a
//                      quanto weight is "<module>.weight"), metadata.total_size their bytes
//   config.json        bitsandbytes: the dequantized modules join
//                      quantization_config.llm_int8_skip_modules (["lm_head"] first when it was
//                      null, transformers' own default), so the loader keeps them in float
//   quanto_qmap.json   the dequantized modules are taken out
// Not copied: subdirectories, other weight files (.safetensors, .bin, .pt, .pth, .ckpt, .gguf,
// .onnx: another model's, not this one's), an earlier job's manifest, and files over 64 MiB;
// each is logged.
#ifndef MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_SIDE_FILES_H_
#define MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_SIDE_FILES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "workers/jobs/core/job_context.h"
#include "workers/jobs/lora_merge/lora_merge_plan.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

inline constexpr uint64_t kSideFileMaxBytes = 64 << 20;

struct SideFile {
  std::string name;  // in the base's directory and in the output's
  std::string bytes;
  std::string role;  // the artifact role: "index", "config" or "file"
};

// INVALID_ARGUMENT (MODEL_CONFIG_INVALID) naming the file when one that must be edited is not
// the JSON it should be.
absl::StatusOr<std::vector<SideFile>> MakeSideFiles(const LoraMergePlan& plan, ObjectStore& base_store,
                                                    JobContext& context);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_LORA_MERGE_LORA_MERGE_SIDE_FILES_H_
