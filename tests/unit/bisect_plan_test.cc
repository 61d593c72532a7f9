// Bisect planning: execution order from names, units at each granularity with quantized companions,
// and the min-max contiguous partition against exhaustive search.
#include "workers/jobs/bisect/bisect_plan.h"

#include <gtest/gtest.h>

#include <functional>
#include <random>

namespace modelsmith {
namespace {

TensorInfo T(const std::string& name, uint64_t bytes, DType dtype = DType::kF16) {
  TensorInfo t;
  t.name = name;
  t.dtype = dtype;
  t.size_bytes = bytes;
  t.shape = {bytes / 2};
  return t;
}

std::vector<std::string> UnitNames(const std::vector<BisectUnit>& units) {
  std::vector<std::string> names;
  for (const BisectUnit& u : units) names.push_back(u.name);
  return names;
}

// Every split of `sizes` into `chunks` non-empty runs, by recursion: the smallest largest run.
uint64_t ExhaustiveBest(const std::vector<uint64_t>& sizes, size_t chunks) {
  std::function<uint64_t(size_t, size_t)> best = [&](size_t start, size_t left) -> uint64_t {
    if (left == 1) {
      uint64_t sum = 0;
      for (size_t i = start; i < sizes.size(); ++i) sum += sizes[i];
      return sum;
    }
    uint64_t result = UINT64_MAX;
    uint64_t run = 0;
    for (size_t end = start + 1; end + left - 1 <= sizes.size(); ++end) {
      run += sizes[end - 1];
      result = std::min(result, std::max(run, best(end, left - 1)));
    }
    return result;
  };
  return best(0, chunks);
}

TEST(BisectPartition, MatchesExhaustiveSearchAndFillsEveryChunk) {
  std::mt19937_64 random(7);
  for (int trial = 0; trial < 300; ++trial) {
    const size_t n = 1 + random() % 11;
    std::vector<uint64_t> sizes(n);
    for (uint64_t& s : sizes) s = random() % 3 == 0 ? 1 + random() % 1000 : 1 + random() % 50;
    for (size_t chunks = 1; chunks <= std::min<size_t>(n, 5); ++chunks) {
      const std::vector<size_t> ends = PartitionMinMax(sizes, chunks);
      ASSERT_EQ(ends.size(), chunks);
      ASSERT_EQ(ends.back(), n);
      uint64_t largest = 0;
      for (size_t k = 0, begin = 0; k < chunks; begin = ends[k++]) {
        ASSERT_LT(begin, ends[k]) << "chunk " << k << " is empty";
        uint64_t run = 0;
        for (size_t i = begin; i < ends[k]; ++i) run += sizes[i];
        largest = std::max(largest, run);
      }
      const uint64_t best = ExhaustiveBest(sizes, chunks);
      EXPECT_EQ(largest, best) << "trial " << trial << " chunks " << chunks;
      EXPECT_EQ(BestLargestChunk(sizes, chunks), best);
    }
  }
}

TEST(BisectPartition, EqualUnitsSplitIntoEqualChunks) {
  const std::vector<uint64_t> sizes(12, 100);
  EXPECT_EQ(PartitionMinMax(sizes, 2), (std::vector<size_t>{6, 12}));
  EXPECT_EQ(PartitionMinMax(sizes, 4), (std::vector<size_t>{3, 6, 9, 12}));
  // 300 at most, none empty; each cut as near an equal share of what remains as it can be.
  EXPECT_EQ(PartitionMinMax(sizes, 5), (std::vector<size_t>{2, 4, 7, 9, 12}));
}

TEST(BisectPartition, OneHugeUnitGetsTheBestSplitWithoutAnEmptyChunk) {
  const std::vector<uint64_t> sizes = {10, 1000, 10, 10};
  const std::vector<size_t> ends = PartitionMinMax(sizes, 2);
  // Best largest chunk: 1000 + the smaller side it must share with. Both cuts give 1010 or 1020;
  // the huge unit goes with one neighbour, and the other chunk still holds something.
  EXPECT_EQ(BestLargestChunk(sizes, 2), 1010u);
  EXPECT_EQ(ends, (std::vector<size_t>{2, 4}));
  EXPECT_EQ(PartitionMinMax(sizes, 4), (std::vector<size_t>{1, 2, 3, 4}));
}

TEST(BisectUnits, BlocksComeInNumericOrderBetweenEmbeddingAndHead) {
  // As a safetensors writer lists them: sorted as strings.
  std::vector<TensorInfo> tensors = {T("lm_head.weight", 64), T("model.embed_tokens.weight", 64)};
  for (int layer : {0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9}) {
    tensors.push_back(T("model.layers." + std::to_string(layer) + ".mlp.up_proj.weight", 32));
    tensors.push_back(T("model.layers." + std::to_string(layer) + ".self_attn.q_proj.weight", 16));
  }
  tensors.push_back(T("model.norm.weight", 4));
  const std::vector<BisectUnit> units = BisectUnits(tensors, {}, v1::BISECT_GRANULARITY_BLOCK);
  std::vector<std::string> expected = {"model.embed_tokens"};
  for (int layer = 0; layer < 12; ++layer) expected.push_back("model.layers." + std::to_string(layer));
  expected.push_back("model.norm");
  expected.push_back("lm_head");
  EXPECT_EQ(UnitNames(units), expected);
  EXPECT_EQ(units[1].size_bytes, 48u);
  EXPECT_EQ(units[1].block, "model.layers.0");
  EXPECT_EQ(units[0].block, "");

  const std::vector<BisectUnit> modules = BisectUnits(tensors, {}, v1::BISECT_GRANULARITY_MODULE);
  ASSERT_EQ(modules.size(), 3u + 24u);
  EXPECT_EQ(modules[1].name, "model.layers.0.mlp.up_proj");
  EXPECT_EQ(modules[2].name, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(modules[2].block, "model.layers.0");
}

TEST(BisectUnits, GgufNamesFollowTheSameOrder) {
  std::vector<TensorInfo> tensors = {T("output.weight", 64),      T("output_norm.weight", 4),
                                     T("token_embd.weight", 64),  T("blk.10.attn_q.weight", 8),
                                     T("blk.9.attn_q.weight", 8), T("blk.0.attn_q.weight", 8)};
  EXPECT_EQ(UnitNames(BisectUnits(tensors, {}, v1::BISECT_GRANULARITY_BLOCK)),
            (std::vector<std::string>{"token_embd", "blk.0", "blk.9", "blk.10", "output_norm", "output"}));
}

TEST(BisectUnits, EncoderBeforeDecoderAndDownBeforeMidBeforeUp) {
  std::vector<TensorInfo> tensors = {T("up_blocks.0.conv.weight", 8),   T("mid_block.resnets.0.conv.weight", 8),
                                     T("down_blocks.1.conv.weight", 8), T("down_blocks.0.conv.weight", 8),
                                     T("conv_out.weight", 8),           T("conv_in.weight", 8),
                                     T("decoder.block.0.w.weight", 8),  T("encoder.block.0.w.weight", 8)};
  EXPECT_EQ(UnitNames(BisectUnits(tensors, {}, v1::BISECT_GRANULARITY_BLOCK)),
            (std::vector<std::string>{"conv_in", "down_blocks.0", "down_blocks.1", "encoder.block.0",
                                      "mid_block.resnets.0", "up_blocks.0", "decoder.block.0", "conv_out"}));
}

TEST(BisectUnits, QuantizedCompanionsStayWithTheirWeightAtEveryGranularity) {
  // A bitsandbytes NF4 weight and its companions, listed apart as a safetensors file would.
  const std::string m = "model.layers.0.self_attn.q_proj";
  std::vector<TensorInfo> tensors = {T(m + ".weight", 512, DType::kU8), T("model.layers.0.input_layernorm.weight", 8),
                                     T(m + ".weight.absmax", 32, DType::kF32),
                                     T(m + ".weight.quant_map", 64, DType::kF32),
                                     T(m + ".weight.quant_state.bitsandbytes__nf4", 100, DType::kU8)};
  std::vector<QuantizedGroup> groups = {
      {m,
       "bnb_nf4",
       {m + ".weight", m + ".weight.absmax", m + ".weight.quant_map", m + ".weight.quant_state.bitsandbytes__nf4"}}};
  for (v1::BisectGranularity g : {v1::BISECT_GRANULARITY_TENSOR, v1::BISECT_GRANULARITY_MODULE}) {
    const std::vector<BisectUnit> units = BisectUnits(tensors, groups, g);
    ASSERT_EQ(units.size(), 2u);
    EXPECT_EQ(units[0].name, m);
    EXPECT_EQ(units[0].size_bytes, 512u + 32 + 64 + 100);  // the packed bytes and every companion
    EXPECT_EQ(units[0].tensors.size(), 4u);
  }
  EXPECT_EQ(BisectUnits(tensors, groups, v1::BISECT_GRANULARITY_BLOCK).size(), 1u);
}

}  // namespace
}  // namespace modelsmith
