#include "workers/formats/adapter_keys.h"

#include "absl/strings/match.h"

namespace modelsmith {

AdapterStyle DetectAdapterStyle(const std::vector<TensorInfo>& tensors) {
  uint32_t kohya = 0, lora_a = 0, diffusers = 0, legacy = 0;
  for (const TensorInfo& t : tensors) {
    const std::string& n = t.name;
    if ((absl::StartsWith(n, "lora_unet_") || absl::StartsWith(n, "lora_te")) && absl::EndsWith(n, ".lora_down.weight"))
      ++kohya;
    if (absl::EndsWith(n, ".lora_A.weight")) {
      ++lora_a;
      for (const char* component : {"unet.", "text_encoder.", "text_encoder_2.", "transformer."}) {
        if (absl::StartsWith(n, component)) {
          ++diffusers;
          break;
        }
      }
    }
    if (absl::EndsWith(n, "lora.down.weight") || absl::EndsWith(n, "_lora.down.weight")) ++legacy;
  }
  if (kohya > 0) return {"kohya", kohya};
  if (lora_a > 0) return {diffusers == lora_a ? "diffusers" : "peft", lora_a};
  if (legacy > 0) return {"diffusers-legacy", legacy};
  return {};
}

}  // namespace modelsmith
