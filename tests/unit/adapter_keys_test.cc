// LoRA key styles as PEFT, kohya and diffusers write them (formats.md §8).
#include "workers/formats/adapter_keys.h"

#include <gtest/gtest.h>

namespace modelsmith {
namespace {

std::vector<TensorInfo> Named(std::initializer_list<const char*> names) {
  std::vector<TensorInfo> tensors;
  for (const char* n : names) tensors.push_back(TensorInfo{.name = n});
  return tensors;
}

TEST(AdapterKeysTest, RecognisesEachStyle) {
  AdapterStyle peft = DetectAdapterStyle(Named({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                                                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                                                "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
                                                "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"}));
  EXPECT_EQ(peft.style, "peft");
  EXPECT_EQ(peft.modules, 2u);
  EXPECT_EQ(DetectAdapterStyle(
                Named({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                       "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
                       "lora_unet_down_blocks_0_attentions_0_proj_in.alpha", "lora_te1_text_model_x.lora_down.weight"}))
                .style,
            "kohya");
  EXPECT_EQ(DetectAdapterStyle(Named({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight",
                                      "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight"}))
                .style,
            "diffusers");
  EXPECT_EQ(DetectAdapterStyle(
                Named({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight",
                       "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight"}))
                .style,
            "diffusers-legacy");
  EXPECT_EQ(DetectAdapterStyle(Named({"model.layers.0.self_attn.q_proj.weight", "lm_head.weight"})).style, "");
}

}  // namespace
}  // namespace modelsmith
