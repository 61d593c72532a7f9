// Recognises a LoRA adapter by its tensor names (formats.md §8), for InspectModel and, later, the
// LoRA-merge job:
//   kohya      "lora_unet_..." / "lora_te[1-3]_..." names with ".lora_down.weight",
//              ".lora_up.weight" and ".alpha" (sd-scripts networks/lora.py);
//   diffusers  "<unet|text_encoder|text_encoder_2|transformer>.<path>.lora_A.weight" / "lora_B"
//              (PEFT-style keys under a pipeline component);
//   diffusers-legacy  "...lora.down.weight" / "...lora.up.weight" (to_q_lora.down, ...);
//   peft       "<path>.lora_A.weight" / ".lora_B.weight" otherwise ("base_model.model." prefix).
#ifndef MODELSMITH_WORKERS_FORMATS_ADAPTER_KEYS_H_
#define MODELSMITH_WORKERS_FORMATS_ADAPTER_KEYS_H_

#include <string>
#include <vector>

#include "workers/tensor/tensor_info.h"

namespace modelsmith {

struct AdapterStyle {
  std::string style;     // "peft", "kohya", "diffusers", "diffusers-legacy"; empty: not an adapter
  uint32_t modules = 0;  // modules with a down/A matrix
};

AdapterStyle DetectAdapterStyle(const std::vector<TensorInfo>& tensors);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_ADAPTER_KEYS_H_
