// The Core ML reader, program index and bisect planner on packages made by
// tests/tools/make_coreml_package.py: stored and dense bytes per compression, weights placed at
// their first compute consumer (also when declared at the top), cuts equal to the brute-force
// min-max optimum, and what InspectModel reports.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "workers/formats/coreml_package.h"
#include "workers/formats/mil_program.h"
#include "workers/jobs/bisect/coreml_bisect_plan.h"
#include "workers/jobs/inspect/inspect_coreml.h"
#include "workers/storage/local_object_store.h"

namespace modelsmith {
namespace {

class CoreMlTest : public ::testing::Test {
 protected:
  std::string Make(const std::string& name, std::vector<std::string> flags) {
    const std::string path = dir_.path() + "/" + name + ".mlpackage";
    std::vector<std::string> argv = {"/usr/bin/python3", testing::SourceDir() + "/tests/tools/make_coreml_package.py",
                                     path};
    argv.insert(argv.end(), flags.begin(), flags.end());
    testing::CommandResult made = testing::RunCommand(argv);
    EXPECT_EQ(made.exit_code, 0) << made.err;
    return path;
  }

  struct Opened {
    std::unique_ptr<CoreMlPackage> package;
    MilProgramIndex index;
  };
  Opened Open(const std::string& path) {
    absl::StatusOr<CoreMlPackage> package = CoreMlPackage::Open(store_, path);
    EXPECT_TRUE(package.ok()) << package.status();
    Opened opened{std::make_unique<CoreMlPackage>(*std::move(package)), {}};
    absl::StatusOr<MilProgramIndex> index = IndexMilProgram(*opened.package);
    EXPECT_TRUE(index.ok()) << index.status();
    opened.index = *std::move(index);
    return opened;
  }

  TempDir dir_;
  LocalObjectStore store_;
};

// The planner's objective by brute force over every contiguous split of `sizes` into `chunks`
// parts: the smallest largest chunk `best`; among the splits whose largest is within 5 % of it,
// the fewest values crossing the cuts in total, then the smallest largest chunk. Returns
// {largest, crossings} of that split.
std::pair<uint64_t, uint64_t> BruteForce(const std::vector<uint64_t>& sizes, const std::vector<uint32_t>& crossings,
                                         size_t chunks) {
  std::vector<std::pair<uint64_t, uint64_t>> splits;  // (largest, crossings) of every split
  std::function<void(size_t, size_t, uint64_t, uint64_t)> go = [&](size_t from, size_t left, uint64_t worst,
                                                                   uint64_t crossed) {
    if (left == 1) {
      uint64_t rest = 0;
      for (size_t p = from; p < sizes.size(); ++p) rest += sizes[p];
      splits.emplace_back(std::max(worst, rest), crossed);
      return;
    }
    uint64_t part = 0;
    for (size_t end = from + 1; end + left - 1 <= sizes.size(); ++end) {
      part += sizes[end - 1];
      go(end, left - 1, std::max(worst, part), crossed + crossings[end - 1]);
    }
  };
  go(0, chunks, 0, 0);
  uint64_t best = UINT64_MAX;
  for (const auto& [largest, crossed] : splits) best = std::min(best, largest);
  const uint64_t cap = best + best / 20;
  std::pair<uint64_t, uint64_t> chosen{UINT64_MAX, UINT64_MAX};
  for (const auto& [largest, crossed] : splits) {
    if (largest <= cap && std::make_pair(crossed, largest) < std::make_pair(chosen.second, chosen.first))
      chosen = {largest, crossed};
  }
  return chosen;
}

TEST_F(CoreMlTest, StoredAndDenseBytesFollowEachCompression) {
  const int d = 32;
  // One d x d linear weight's blobs (sub-byte data packed), per kind.
  const std::map<std::string, std::pair<uint64_t, std::string>> expected = {
      {"fp16", {2 * d * d, "none"}},
      {"affine8", {d * d + 2 * d, "constexpr_affine_dequantize"}},  // int8 data, fp16 per-row scales
      {"lut4", {d * d / 2 + 2 * 16, "constexpr_lut_to_dense"}},     // uint4 indices, 16 fp16 entries
      {"blockwise", {d * d / 2 + 2 * d * d / 8 + d * d / 16, "constexpr_blockwise_shift_scale"}}};
  for (const auto& [kind, want] : expected) {
    Opened m = Open(Make(kind, {"--kind", kind, "--layers", "1", "--dim", std::to_string(d)}));
    const MilWeight* q_proj = nullptr;
    for (const MilWeight& w : m.index.weights) {
      if (w.dense_bytes == 2u * d * d && m.index.ops[m.index.compute_ops[w.first_position]].type == "linear") {
        q_proj = &w;
        break;
      }
    }
    ASSERT_NE(q_proj, nullptr) << kind;
    EXPECT_EQ(q_proj->stored_bytes, want.first) << kind;
    EXPECT_EQ(q_proj->compression, want.second) << kind;
  }
}

TEST_F(CoreMlTest, WeightsDeclaredAtTheTopWeighAtTheirFirstComputeConsumer) {
  Opened top = Open(Make("top", {"--kind", "lut4", "--top", "--layers", "3"}));
  Opened inline_ = Open(Make("inline", {"--kind", "lut4", "--layers", "3"}));
  // The same program apart from where the constexpr ops sit: the same bytes at the same positions.
  absl::StatusOr<CoreMlBisectPlan> a = PlanCoreMlBisect(top.index, 2), b = PlanCoreMlBisect(inline_.index, 2);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->position_bytes, b->position_bytes);
  EXPECT_EQ(top.index.ops.front().kind, MilOpKind::kConstexpr) << "the fixture declares them first";
  for (const MilWeight& w : top.index.weights) {
    const std::string consumer = top.index.ops[top.index.compute_ops[w.first_position]].type;
    EXPECT_TRUE(consumer == "linear" || consumer == "layer_norm" || consumer == "conv") << consumer;
  }
  // A program-order count puts nearly everything before the first eligible cut.
  EXPECT_GT(a->program_order_first, 5 * a->program_order_second);
}

TEST_F(CoreMlTest, CutsMatchTheBruteForceOptimum) {
  for (const std::string kind : {"fp16", "affine8", "sparse"}) {
    Opened m = Open(Make(kind, {"--kind", kind, "--layers", "3"}));
    for (size_t chunks : {2, 3, 4}) {
      absl::StatusOr<CoreMlBisectPlan> plan = PlanCoreMlBisect(m.index, chunks);
      ASSERT_TRUE(plan.ok()) << plan.status();
      ASSERT_EQ(plan->chunks.size(), chunks);
      uint64_t largest = 0, total = 0, crossed = 0;
      size_t next = 0;
      for (const CoreMlChunkPlan& c : plan->chunks) {
        EXPECT_EQ(c.first_position, next);
        if (next > 0) crossed += plan->crossings[next - 1];
        next = c.end_position;
        largest = std::max(largest, c.size_bytes);
        total += c.size_bytes;
      }
      EXPECT_EQ(next, m.index.compute_ops.size());
      EXPECT_EQ(total, plan->total_bytes);
      const auto [best_largest, best_crossed] = BruteForce(plan->position_bytes, plan->crossings, chunks);
      EXPECT_EQ(largest, best_largest) << kind << " " << chunks;
      EXPECT_EQ(crossed, best_crossed) << kind << " " << chunks;
    }
  }
}

TEST_F(CoreMlTest, InspectReportsTheProgramAndEveryWeight) {
  const std::string path = Make("lut", {"--kind", "lut4", "--layers", "2", "--dim", "32"});
  absl::StatusOr<v1::ModelInfo> info = InspectCoreMl(Location{&store_, path});
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->format(), "coreml-mlprogram");
  const v1::CoreMlProgramInfo& p = info->coreml();
  EXPECT_EQ(p.specification_version(), 9);
  EXPECT_EQ(p.opset(), "CoreML8");
  ASSERT_EQ(p.inputs_size(), 1);
  EXPECT_EQ(p.inputs(0).dtype(), "fp16");
  EXPECT_EQ(p.outputs(0).name(), "y");
  int lut_weights = 0;
  for (const v1::CoreMlWeight& w : p.weights()) {
    if (w.compression() != "constexpr_lut_to_dense") continue;
    ++lut_weights;
    EXPECT_EQ(w.stored_dtypes(), "uint4+fp16");
    EXPECT_EQ(w.bits(), 4u);
    EXPECT_LT(w.stored_bytes() * 3, w.dense_bytes()) << "4-bit indices: about a quarter of fp16";
    EXPECT_FALSE(w.first_consumer().empty());
  }
  EXPECT_EQ(lut_weights, 2 * 6 + 1);  // six linears per layer and the conv
  EXPECT_EQ(info->quantization(), "constexpr_lut_to_dense");
  EXPECT_EQ(static_cast<int>(info->tensor_count()), p.weights_size());
}

}  // namespace
}  // namespace modelsmith
