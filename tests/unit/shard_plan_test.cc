#include "workers/jobs/shard/shard_plan.h"

#include <gtest/gtest.h>

namespace modelsmith {
namespace {

constexpr uint64_t kGB = 1'000'000'000;

// Shard contents as sizes, for readable expectations.
std::vector<std::vector<uint64_t>> Sizes(const ShardAssignment& shards, const std::vector<uint64_t>& sizes) {
  std::vector<std::vector<uint64_t>> out;
  for (const auto& shard : shards) {
    out.emplace_back();
    for (size_t i : shard) out.back().push_back(sizes[i] / kGB);
  }
  return out;
}

TEST(ShardPlannerHfGreedy, HuggingFaceDocumentedExample) {
  // huggingface_hub docs: limit 10GB, tensors 6, 6, 2, 6, 2, 2 GB -> [6], [6, 2], [6, 2, 2].
  std::vector<uint64_t> sizes = {6 * kGB, 6 * kGB, 2 * kGB, 6 * kGB, 2 * kGB, 2 * kGB};
  ShardAssignment shards = PlanShardsHfGreedy(sizes, 10 * kGB);
  EXPECT_EQ(Sizes(shards, sizes), (std::vector<std::vector<uint64_t>>{{6}, {6, 2}, {6, 2, 2}}));
  EXPECT_EQ(shards[1], (std::vector<size_t>{1, 2}));
}

TEST(ShardPlannerHfGreedy, TensorOverLimitIsAppendedBeforeTheOpenShard) {
  // 3 fills the open shard; 12 > 10 goes out at once; 4 still joins the open shard.
  std::vector<uint64_t> sizes = {3 * kGB, 12 * kGB, 4 * kGB, 5 * kGB};
  ShardAssignment shards = PlanShardsHfGreedy(sizes, 10 * kGB);
  EXPECT_EQ(shards, (ShardAssignment{{1}, {0, 2}, {3}}));
}

TEST(ShardPlannerHfGreedy, ExactFitStaysInShard) {
  std::vector<uint64_t> sizes = {4 * kGB, 6 * kGB, 1 * kGB};
  EXPECT_EQ(PlanShardsHfGreedy(sizes, 10 * kGB), (ShardAssignment{{0, 1}, {2}}));
}

TEST(ShardPlannerHfGreedy, NoLimitGivesOneShard) {
  std::vector<uint64_t> sizes = {4, 6, 1};
  EXPECT_EQ(PlanShardsHfGreedy(sizes, 0), (ShardAssignment{{0, 1, 2}}));
}

TEST(ShardPlannerHfGreedy, EmptyInputGivesNoShards) { EXPECT_TRUE(PlanShardsHfGreedy({}, 10).empty()); }

TEST(ShardPlannerHfGreedy, NeverAnEmptyShardEvenWhenFirstTensorIsOverLimit) {
  std::vector<uint64_t> sizes = {20, 20, 3};
  ShardAssignment shards = PlanShardsHfGreedy(sizes, 10);
  EXPECT_EQ(shards, (ShardAssignment{{0}, {1}, {2}}));
  for (const auto& shard : shards) EXPECT_FALSE(shard.empty());
}

TEST(ShardPlannerBalanced, SameShardCountAsGreedyWithSmallerLargestShard) {
  std::vector<uint64_t> sizes = {8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};  // 18 in all, limit 10
  // Greedy: [8,1,1] [1 x 8] -> largest 10. Balanced: [8,1] [1 x 9] -> largest 9.
  EXPECT_EQ(PlanShardsHfGreedy(sizes, 10), (ShardAssignment{{0, 1, 2}, {3, 4, 5, 6, 7, 8, 9, 10}}));
  EXPECT_EQ(PlanShardsBalanced(sizes, 10), (ShardAssignment{{0, 1}, {2, 3, 4, 5, 6, 7, 8, 9, 10}}));
}

TEST(ShardPlannerBalanced, KeepsTensorOrderAndOverLimitTensorsAlone) {
  std::vector<uint64_t> sizes = {3, 30, 4, 4, 4};
  ShardAssignment shards = PlanShardsBalanced(sizes, 10);
  EXPECT_EQ(shards, (ShardAssignment{{0}, {1}, {2, 3}, {4}}));
  std::vector<size_t> flattened;
  for (const auto& s : shards) flattened.insert(flattened.end(), s.begin(), s.end());
  EXPECT_TRUE(std::is_sorted(flattened.begin(), flattened.end()));
}

TEST(ShardPlannerBalanced, EqualTensorsSplitEvenly) {
  std::vector<uint64_t> sizes(12, 1);
  ShardAssignment shards = PlanShardsBalanced(sizes, 5);  // fewest = 3; best = 4,4,4
  ASSERT_EQ(shards.size(), 3u);
  for (const auto& s : shards) EXPECT_EQ(s.size(), 4u);
}

TEST(ShardNaming, SingleFileWithoutAndWithVariant) {
  EXPECT_EQ(ShardFileName("model", "", 0, 1), "model.safetensors");
  EXPECT_EQ(ShardFileName("model", "fp16", 0, 1), "model.fp16.safetensors");
}

TEST(ShardNaming, ShardsWithoutAndWithVariant) {
  EXPECT_EQ(ShardFileName("model", "", 0, 3), "model-00001-of-00003.safetensors");
  EXPECT_EQ(ShardFileName("model", "fp16", 2, 3), "model.fp16-00003-of-00003.safetensors");
  EXPECT_EQ(ShardFileName("diffusion_pytorch_model", "fp16", 0, 2),
            "diffusion_pytorch_model.fp16-00001-of-00002.safetensors");
}

TEST(ShardNaming, IndexNames) {
  EXPECT_EQ(IndexFileName("model", ""), "model.safetensors.index.json");
  EXPECT_EQ(IndexFileName("model", "fp16"), "model.safetensors.index.fp16.json");
  EXPECT_EQ(IndexFileName("diffusion_pytorch_model", "fp16"), "diffusion_pytorch_model.safetensors.index.fp16.json");
}

TEST(ShardNaming, ValidatesStemAndVariant) {
  EXPECT_TRUE(ValidateShardNaming("model", "").ok());
  EXPECT_TRUE(ValidateShardNaming("diffusion_pytorch_model", "fp16").ok());
  EXPECT_FALSE(ValidateShardNaming("", "").ok());
  EXPECT_FALSE(ValidateShardNaming("../model", "").ok());
  EXPECT_FALSE(ValidateShardNaming(".hidden", "").ok());
  EXPECT_FALSE(ValidateShardNaming("model", "fp.16").ok());
  EXPECT_FALSE(ValidateShardNaming("model", "a/b").ok());
}

}  // namespace
}  // namespace modelsmith
