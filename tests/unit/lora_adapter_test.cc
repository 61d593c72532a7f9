// Adapter key grouping, scales and base matching for each key style (formats.md §8).
#include "workers/formats/lora_adapter.h"

#include <cmath>

#include "gtest/gtest.h"
#include "workers/common/error.h"
#include "workers/jobs/lora_merge/lora_match.h"

namespace modelsmith {
namespace {

TensorInfo T(std::string name, std::vector<uint64_t> shape, DType dtype = DType::kF32) {
  TensorInfo t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.dtype = dtype;
  return t;
}

// Alpha tensors are read through this: the value is encoded in data_offset for the test.
absl::StatusOr<double> ReadAlpha(const TensorInfo& t) { return static_cast<double>(t.data_offset); }

TensorInfo Alpha(std::string name, uint64_t value) {
  TensorInfo t = T(std::move(name), {});
  t.data_offset = value;
  return t;
}

const std::vector<TensorInfo> kLlamaBase = {
    T("model.embed_tokens.weight", {32, 8}), T("model.layers.0.self_attn.q_proj.weight", {8, 8}),
    T("model.layers.0.self_attn.v_proj.weight", {4, 8}), T("model.layers.1.self_attn.q_proj.weight", {8, 8}),
    T("model.layers.0.input_layernorm.weight", {8})};

TEST(LoraAdapter, PeftScaleComesFromTheConfigWithPatterns) {
  std::vector<TensorInfo> tensors = {
      T("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {4, 8}),
      T("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {8, 4}),
      T("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", {2, 8}),
      T("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", {4, 2}),
  };
  nlohmann::json config = {{"peft_type", "LORA"},
                           {"r", 4},
                           {"lora_alpha", 8},
                           {"rank_pattern", {{"v_proj", 2}}},
                           {"alpha_pattern", {{"layers.0.self_attn.v_proj", 1}}}};
  absl::StatusOr<LoraAdapter> a = ParseLoraAdapter(tensors, config, {}, ReadAlpha);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->style, "peft");
  ASSERT_EQ(a->modules.size(), 2u);
  EXPECT_EQ(a->modules[0].path, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(a->modules[0].rank, 4u);
  EXPECT_DOUBLE_EQ(a->modules[0].scale, 2.0);
  EXPECT_EQ(a->modules[1].rank, 2u);
  EXPECT_DOUBLE_EQ(a->modules[1].scale, 0.5);  // alpha 1 / r 2

  config["use_rslora"] = true;
  a = ParseLoraAdapter(tensors, config, {}, ReadAlpha);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_DOUBLE_EQ(a->modules[0].scale, 8 / std::sqrt(4.0));

  LoraMatch m = MatchLoraAdapter(*a, kLlamaBase);
  EXPECT_TRUE(m.mismatches.empty());
  ASSERT_EQ(m.targets.size(), 2u);
  EXPECT_EQ(m.targets[0].base->name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(m.targets[1].rows, 4u);
  EXPECT_EQ(m.targets[1].cols, 8u);
}

TEST(LoraAdapter, PeftWithoutConfigAndRankDisagreementsAreRefused) {
  std::vector<TensorInfo> tensors = {T("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {4, 8}),
                                     T("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {8, 4})};
  EXPECT_EQ(ReasonOf(ParseLoraAdapter(tensors, std::nullopt, {}, ReadAlpha).status()), "LORA_CONFIG_MISSING");
  absl::StatusOr<LoraAdapter> a = ParseLoraAdapter(tensors, nlohmann::json{{"r", 8}, {"lora_alpha", 8}}, {}, ReadAlpha);
  EXPECT_EQ(ReasonOf(a.status()), "LORA_SHAPE_MISMATCH");
  a = ParseLoraAdapter(tensors, nlohmann::json{{"r", "eight"}}, {}, ReadAlpha);
  EXPECT_EQ(ReasonOf(a.status()), "LORA_CONFIG_INVALID");
  EXPECT_EQ(ContextOf(a.status())["field"], "r");
  tensors[1] = T("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {8, 3});
  EXPECT_EQ(ReasonOf(ParseLoraAdapter(tensors, nlohmann::json{{"r", 4}}, {}, ReadAlpha).status()),
            "LORA_SHAPE_MISMATCH");
  EXPECT_EQ(ReasonOf(ParseLoraAdapter({T("a.weight", {2})}, std::nullopt, {}, ReadAlpha).status()),
            "LORA_NOT_AN_ADAPTER");
}

TEST(LoraAdapter, KohyaAlphaAndFlattenedNamesResolveAgainstTheBase) {
  std::vector<TensorInfo> tensors = {
      T("lora_te_model_layers_0_self_attn_q_proj.lora_down.weight", {4, 8}),
      T("lora_te_model_layers_0_self_attn_q_proj.lora_up.weight", {8, 4}),
      Alpha("lora_te_model_layers_0_self_attn_q_proj.alpha", 2),
      T("lora_te_model_layers_1_self_attn_q_proj.lora_down.weight", {4, 8}),
      T("lora_te_model_layers_1_self_attn_q_proj.lora_up.weight", {8, 4}),
      Alpha("lora_te_model_layers_1_self_attn_q_proj.alpha", 0),  // 0 means alpha = r
  };
  absl::StatusOr<LoraAdapter> a = ParseLoraAdapter(tensors, std::nullopt, {}, ReadAlpha);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->style, "kohya");
  ASSERT_EQ(a->modules.size(), 2u);
  EXPECT_TRUE(a->modules[0].flattened);
  EXPECT_EQ(a->modules[0].component, "te");
  EXPECT_DOUBLE_EQ(a->modules[0].scale, 0.5);
  EXPECT_DOUBLE_EQ(a->modules[1].scale, 1.0);
  LoraMatch m = MatchLoraAdapter(*a, kLlamaBase);
  EXPECT_TRUE(m.mismatches.empty());
  ASSERT_EQ(m.targets.size(), 2u);
  EXPECT_EQ(m.targets[1].base->name, "model.layers.1.self_attn.q_proj.weight");
}

TEST(LoraAdapter, AFlattenedNameThatFitsTwoBaseWeightsIsAmbiguous) {
  std::vector<TensorInfo> base = {T("a.b_c.weight", {8, 8}), T("a_b.c.weight", {8, 8})};
  std::vector<TensorInfo> tensors = {T("lora_unet_a_b_c.lora_down.weight", {2, 8}),
                                     T("lora_unet_a_b_c.lora_up.weight", {8, 2})};
  absl::StatusOr<LoraAdapter> a = ParseLoraAdapter(tensors, std::nullopt, {}, ReadAlpha);
  ASSERT_TRUE(a.ok());
  LoraMatch m = MatchLoraAdapter(*a, base);
  ASSERT_EQ(m.mismatches.size(), 1u);
  EXPECT_EQ(m.mismatches[0].key, "lora_unet_a_b_c");
  EXPECT_NE(m.mismatches[0].problem.find("ambiguous"), std::string::npos);
  EXPECT_EQ(m.mismatches[0].closest, (std::vector<std::string>{"a.b_c.weight", "a_b.c.weight"}));
  EXPECT_TRUE(m.targets.empty());
}

TEST(LoraAdapter, UnmatchedModulesNameTheClosestBaseWeights) {
  std::vector<TensorInfo> tensors = {
      T("base_model.model.layers.0.self_attn.q_proj.lora_A.weight", {2, 8}),  // "model." prefix missing
      T("base_model.model.layers.0.self_attn.q_proj.lora_B.weight", {8, 2}),
      T("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight_extra", {8, 2}),  // stray
  };
  absl::StatusOr<LoraAdapter> a = ParseLoraAdapter(tensors, nlohmann::json{{"r", 2}, {"lora_alpha", 2}}, {}, ReadAlpha);
  ASSERT_TRUE(a.ok()) << a.status();
  LoraMatch m = MatchLoraAdapter(*a, kLlamaBase);
  EXPECT_TRUE(m.targets.empty());
  ASSERT_EQ(m.mismatches.size(), 2u);
  EXPECT_EQ(m.mismatches[0].key, "base_model.model.layers.0.self_attn.q_proj");
  ASSERT_FALSE(m.mismatches[0].closest.empty());
  EXPECT_EQ(m.mismatches[0].closest[0], "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(m.mismatches[1].key, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight_extra");
}

TEST(LoraAdapter, DiffusersKeysTakeTheirConfigFromTheFileMetadata) {
  std::vector<TensorInfo> base = {T("down_blocks.0.attentions.0.proj_in.weight", {4, 8, 1, 1}),
                                  T("mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight", {8, 8})};
  std::vector<TensorInfo> tensors = {
      T("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", {2, 8}),  // linear LoRA, 1x1 base
      T("unet.down_blocks.0.attentions.0.proj_in.lora_B.weight", {4, 2})};
  std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                 {"lora_adapter_metadata", R"({"r": 2, "lora_alpha": 4})"}};
  absl::StatusOr<LoraAdapter> a = ParseLoraAdapter(tensors, std::nullopt, metadata, ReadAlpha);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->style, "diffusers");
  EXPECT_EQ(a->config_source, "lora_adapter_metadata");
  EXPECT_EQ(a->modules[0].component, "unet");
  EXPECT_DOUBLE_EQ(a->modules[0].scale, 2.0);
  LoraMatch m = MatchLoraAdapter(*a, base);
  ASSERT_EQ(m.targets.size(), 1u) << (m.mismatches.empty() ? "" : m.mismatches[0].problem);
  EXPECT_EQ(m.targets[0].cols, 8u);

  // Legacy processor keys with separate alphas.
  std::vector<TensorInfo> legacy = {
      T("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight", {2, 8}),
      T("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight", {8, 2})};
  a = ParseLoraAdapter(legacy, std::nullopt, {}, ReadAlpha);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->style, "diffusers-legacy");
  EXPECT_EQ(a->modules[0].path, "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0");
  EXPECT_DOUBLE_EQ(a->modules[0].scale, 1.0);
  m = MatchLoraAdapter(*a, base);
  EXPECT_EQ(m.targets.size(), 1u);
}

TEST(LoraAdapter, ShapesDtypesAndFanInFanOutAreChecked) {
  std::vector<TensorInfo> base = {T("h.0.attn.c_attn.weight", {8, 24}), T("q.weight", {8, 8}, DType::kI8),
                                  T("conv.weight", {16, 4, 3, 3})};
  std::vector<TensorInfo> tensors = {
      T("base_model.model.h.0.attn.c_attn.lora_A.weight", {2, 8}),
      T("base_model.model.h.0.attn.c_attn.lora_B.weight", {24, 2}),
      T("base_model.model.q.lora_A.weight", {2, 8}),
      T("base_model.model.q.lora_B.weight", {8, 2}),
      T("base_model.model.conv.lora_A.weight", {2, 16, 3, 3}),
      T("base_model.model.conv.lora_B.weight", {16, 2, 1, 1}),
  };
  absl::StatusOr<LoraAdapter> a =
      ParseLoraAdapter(tensors, nlohmann::json{{"r", 2}, {"fan_in_fan_out", true}}, {}, ReadAlpha);
  ASSERT_TRUE(a.ok()) << a.status();
  LoraMatch m = MatchLoraAdapter(*a, base);
  ASSERT_EQ(m.targets.size(), 1u);
  EXPECT_EQ(m.targets[0].base->name, "h.0.attn.c_attn.weight");
  EXPECT_EQ(m.targets[0].rows, 8u);
  EXPECT_EQ(m.targets[0].cols, 24u);
  ASSERT_EQ(m.mismatches.size(), 2u);
  EXPECT_NE(m.mismatches[0].problem.find("I8"), std::string::npos);
  EXPECT_NE(m.mismatches[1].problem.find("fan_in_fan_out"), std::string::npos);

  a = ParseLoraAdapter(tensors, nlohmann::json{{"r", 2}}, {}, ReadAlpha);
  m = MatchLoraAdapter(*a, base);
  ASSERT_EQ(m.mismatches.size(), 3u);
  EXPECT_NE(m.mismatches[0].problem.find("cannot take"), std::string::npos);  // [8, 24] is not [24, 8]
  EXPECT_NE(m.mismatches[2].problem.find("grouped convolution (4 groups"), std::string::npos);
}

}  // namespace
}  // namespace modelsmith
