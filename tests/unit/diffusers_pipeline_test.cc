// Reading a diffusers pipeline directory: components in model_index.json order, pipeline
// settings and optional [null, null] components told apart from components, weight stems, and
// hostile indexes refused with the key named.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.h"
#include "workers/common/error.h"
#include "workers/formats/diffusers_pipeline.h"
#include "workers/storage/local_object_store.h"

namespace modelsmith {
namespace {

void Write(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

TEST(DiffusersPipelineTest, ComponentsInIndexOrderWithTheirWeightsAndStems) {
  TempDir dir;
  const std::string p = dir.path();
  Write(p + "/model_index.json",
        R"({"_class_name": "KolorsPipeline", "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["kolors", "ChatGLMModel"], "force_zeros_for_empty_prompt": false,
            "safety_checker": [null, null], "scheduler": ["diffusers", "EulerDiscreteScheduler"]})");
  Write(p + "/vae/config.json", "{}");
  Write(p + "/vae/diffusion_pytorch_model.safetensors", "12345678");
  Write(p + "/text_encoder/model-00001-of-00002.safetensors", "1234");
  Write(p + "/text_encoder/model-00002-of-00002.safetensors", "12");
  Write(p + "/scheduler/scheduler_config.json", "{}");
  LocalObjectStore store;
  ASSERT_TRUE(*IsDiffusersPipeline(store, p));
  EXPECT_FALSE(*IsDiffusersPipeline(store, p + "/vae"));
  absl::StatusOr<DiffusersPipeline> pipeline = ReadDiffusersPipeline(store, p);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  ASSERT_EQ(pipeline->components.size(), 3u);
  EXPECT_EQ(pipeline->components[0].name, "vae");
  ASSERT_EQ(pipeline->components[0].weight_sets.size(), 1u);
  EXPECT_EQ(pipeline->components[0].weight_sets[0].stem, "diffusion_pytorch_model");
  EXPECT_EQ(pipeline->components[0].weight_sets[0].bytes, 8u);
  EXPECT_EQ(pipeline->components[1].name, "text_encoder");
  EXPECT_EQ(pipeline->components[1].library, "kolors");
  EXPECT_EQ(pipeline->components[2].name, "scheduler");
  EXPECT_FALSE(pipeline->components[2].has_weights());
  EXPECT_EQ(pipeline->files.size(), 6u);
  // Shards without their index are no set to read.
  EXPECT_FALSE(pipeline->components[1].has_weights());
}

TEST(DiffusersPipelineTest, SavedCopiesOfAComponentAreToldApartByVariant) {
  TempDir dir;
  const std::string p = dir.path();
  Write(p + "/model_index.json", R"({"unet": ["diffusers", "UNet2DConditionModel"],
                                     "text_encoder": ["transformers", "CLIPTextModel"]})");
  Write(p + "/unet/diffusion_pytorch_model.safetensors", "1234");
  Write(p + "/unet/diffusion_pytorch_model.bin", "123456");  // the same copy as .bin: safetensors wins
  Write(p + "/unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors", "12");
  Write(p + "/unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors", "123");
  Write(p + "/unet/diffusion_pytorch_model.safetensors.index.fp16.json", "{}");
  Write(p + "/text_encoder/model.fp16.safetensors", "12");
  Write(p + "/text_encoder/pytorch_model.fp16.bin", "123");
  LocalObjectStore store;
  absl::StatusOr<DiffusersPipeline> pipeline = ReadDiffusersPipeline(store, p);
  ASSERT_TRUE(pipeline.ok()) << pipeline.status();
  const PipelineComponent& unet = pipeline->components[0];
  ASSERT_EQ(unet.weight_sets.size(), 2u);
  EXPECT_EQ(unet.weight_sets[0].variant, "");
  EXPECT_EQ(unet.weight_sets[0].entry, "diffusion_pytorch_model.safetensors");
  EXPECT_EQ(unet.weight_sets[0].bytes, 4u);
  EXPECT_EQ(unet.weight_sets[1].variant, "fp16");
  EXPECT_EQ(unet.weight_sets[1].entry, "diffusion_pytorch_model.safetensors.index.fp16.json");
  EXPECT_EQ(unet.weight_sets[1].bytes, 5u);
  EXPECT_EQ((*ChooseWeights(unet, ""))->entry, "diffusion_pytorch_model.safetensors");
  EXPECT_EQ((*ChooseWeights(unet, "fp16"))->variant, "fp16");
  EXPECT_EQ(ReasonOf(ChooseWeights(unet, "bf16").status()), "COMPONENT_VARIANT_MISSING");
  // text_encoder: transformers' model.fp16.safetensors and pytorch_model.fp16.bin are one copy;
  // with no plain files, that only variant is what a job reads.
  const PipelineComponent& text = pipeline->components[1];
  ASSERT_EQ(text.weight_sets.size(), 1u);
  EXPECT_EQ((*ChooseWeights(text, ""))->entry, "model.fp16.safetensors");
  Write(p + "/text_encoder/model.bf16.safetensors", "12");
  pipeline = ReadDiffusersPipeline(store, p);
  ASSERT_TRUE(pipeline.ok());
  EXPECT_EQ(ReasonOf(ChooseWeights(pipeline->components[1], "").status()), "COMPONENT_VARIANT_AMBIGUOUS");
}

TEST(DiffusersPipelineTest, HostileIndexesAreRefusedNamingTheKey) {
  TempDir dir;
  LocalObjectStore store;
  struct Case {
    std::string index, reason, names;
  };
  for (const Case& c :
       {Case{"[1, 2]", "PIPELINE_INDEX_INVALID", "not a JSON object"},
        Case{"{not json", "PIPELINE_INDEX_INVALID", "not a JSON object"},
        Case{R"({"_class_name": "X"})", "PIPELINE_INDEX_INVALID", "names no components"},
        Case{R"({"../up": ["diffusers", "UNet2DConditionModel"]})", "PIPELINE_INDEX_INVALID", "'../up'"},
        Case{R"({"unet": ["diffusers", "UNet2DConditionModel"]})", "COMPONENT_MISSING", "'unet'"}}) {
    Write(dir.path() + "/model_index.json", c.index);
    absl::StatusOr<DiffusersPipeline> pipeline = ReadDiffusersPipeline(store, dir.path());
    ASSERT_FALSE(pipeline.ok()) << c.index;
    EXPECT_EQ(ReasonOf(pipeline.status()), c.reason) << pipeline.status();
    EXPECT_NE(pipeline.status().message().find(c.names), std::string::npos) << pipeline.status();
  }
}

}  // namespace
}  // namespace modelsmith
