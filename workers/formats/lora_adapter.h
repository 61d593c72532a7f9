// LoraAdapter: a LoRA adapter file's tensors grouped into modules, each with its down (A) and up
// (B) matrices, optional DoRA magnitude, rank and scale (formats.md §8).
//
// Key styles, told apart by adapter_keys.h:
//   peft       "base_model.model.<path>.lora_A[.<adapter>].weight" / "lora_B", DoRA
//              "<path>.lora_magnitude_vector[.<adapter>][.weight]"; adapter_config.json gives
//              r, lora_alpha, use_rslora, rank_pattern, alpha_pattern, fan_in_fan_out.
//   diffusers  "<component>.<path>.lora_A.weight" (component unet, text_encoder, text_encoder_2,
//              transformer); the config comes from adapter_config.json, else from the file's
//              "lora_adapter_metadata", else alpha = r unless "<path>.alpha" tensors say otherwise.
//   diffusers-legacy  "<path>.lora.down.weight" / ".lora.up.weight", or
//              "<path>.processor.<proj>_lora.down.weight" (module "<path>.<proj>", "to_out" being
//              "to_out.0"); alphas as "<path>.alpha".
//   kohya      "lora_unet_<flattened path>.lora_down.weight" / ".lora_up.weight" / ".alpha" /
//              ".dora_scale": every "." of the path became "_", so `path` keeps the flattened
//              form and matching resolves it against the base (lora_match.h).
//
// Scale: alpha / r, or alpha / sqrt(r) with use_rslora; a kohya (or diffusers) alpha that is
// missing or 0 means alpha = r. PEFT's rank_pattern / alpha_pattern keys match a module whose
// path ends with ".<pattern>" or is the pattern (regex), as PEFT's get_pattern_key does.
#ifndef MODELSMITH_WORKERS_FORMATS_LORA_ADAPTER_H_
#define MODELSMITH_WORKERS_FORMATS_LORA_ADAPTER_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

struct LoraModule {
  std::string key;                        // the module's key prefix as the adapter writes it
  std::string path;                       // the module path to find in the base (kohya: still flattened)
  std::string component;                  // diffusers: "unet", "text_encoder", ...; kohya: "unet", "te", "te1", ...
  bool flattened = false;                 // kohya: '.' became '_' in `path`
  const TensorInfo* down = nullptr;       // A: [r, in] or [r, in, kh, kw]
  const TensorInfo* up = nullptr;         // B: [out, r] or [out, r / groups, 1, 1]
  const TensorInfo* magnitude = nullptr;  // DoRA: one value per output row
  uint64_t rank = 0;
  // A convolution's B may be grouped (PEFT's lora_B for a grouped base): output channel o takes
  // A's channels of its group only, [g * r / groups, (g + 1) * r / groups) for g = o / (out / groups).
  uint64_t groups = 1;
  double alpha = 0;
  double scale = 0;             // alpha / r (or / sqrt(r))
  bool fan_in_fan_out = false;  // the base stores this weight as [in, out] (GPT-2 Conv1D)
};

struct LoraAdapter {
  std::string style;                // "peft", "kohya", "diffusers", "diffusers-legacy"
  std::vector<LoraModule> modules;  // in key order
  // Keys that belong to no module (an unknown suffix, a module missing its A or B); the job
  // reports them with the unmatched modules.
  std::vector<std::string> stray_keys;
  bool use_rslora = false;
  std::string config_source;  // "adapter_config.json", "lora_adapter_metadata", "alpha tensors", "default"
};

// Reads a 0-d (or one-element) tensor's value as a double.
using ScalarReader = std::function<absl::StatusOr<double>(const TensorInfo&)>;

// Groups `tensors` (which must outlive the result) into modules. `config` is the parsed
// adapter_config.json if there was one; `metadata` the safetensors __metadata__.
// INVALID_ARGUMENT: not an adapter (LORA_NOT_AN_ADAPTER), a PEFT adapter without its config
// (LORA_CONFIG_MISSING), a bad config field (LORA_CONFIG_INVALID, naming it), or A/B shapes that
// disagree (LORA_SHAPE_MISMATCH, naming the module).
absl::StatusOr<LoraAdapter> ParseLoraAdapter(const std::vector<TensorInfo>& tensors,
                                             const std::optional<nlohmann::json>& config,
                                             const std::map<std::string, std::string>& metadata,
                                             const ScalarReader& read_scalar);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_LORA_ADAPTER_H_
