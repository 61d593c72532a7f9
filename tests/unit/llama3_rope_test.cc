// Llama 3 RoPE scaling: rope_freqs.weight computed as llama.cpp's converter computes it, and the
// parameters recovered from a table (GGUF -> HF), for the shapes Llama 3.1 and 3.2 ship and for
// tiny test models whose tables have one smooth entry or none.
#include <gtest/gtest.h>

#include <cmath>

#include "workers/jobs/convert/llama3_rope.h"

namespace modelsmith {
namespace {

void ExpectRecovered(const Llama3RopeScaling& s, double base, uint64_t head_dim) {
  const std::vector<float> table = Llama3RopeFactors(s, base, head_dim);
  std::optional<Llama3RopeScaling> back = RecoverLlama3RopeScaling(table, base);
  ASSERT_TRUE(back.has_value()) << "head_dim " << head_dim << ", factor " << s.factor << ", low " << s.low_freq_factor
                                << ", high " << s.high_freq_factor << ", original " << s.original_context;
  // The parameters need not be the same ones (only their ratios show in the table), but they
  // must compute the same table.
  EXPECT_EQ(Llama3RopeFactors(*back, base, head_dim), table);
}

TEST(Llama3RopeTest, Llama31TableMatchesTheConvertersFormula) {
  const Llama3RopeScaling s{8.0, 1.0, 4.0, 8192.0};
  const std::vector<float> table = Llama3RopeFactors(s, 500000.0, 128);
  ASSERT_EQ(table.size(), 64u);
  EXPECT_EQ(table.front(), 1.0f);  // the fastest pairs are not scaled
  EXPECT_EQ(table.back(), 8.0f);   // the slowest by the factor
  for (size_t i = 1; i < table.size(); ++i) EXPECT_GE(table[i], table[i - 1]);
  // One smooth entry by hand: pair 20's wavelength 2 pi 500000^(40/128).
  const double w = 2 * M_PI * std::pow(500000.0, 40.0 / 128.0);
  if (w > 8192.0 / 4 && w < 8192.0) {
    const double smooth = (8192.0 / w - 1) / 3;
    EXPECT_EQ(table[20], static_cast<float>(1 / ((1 - smooth) / 8 + smooth)));
  }
}

TEST(Llama3RopeTest, ParametersComeBackExactlyForLlama3Models) {
  for (const double factor : {8.0, 32.0}) {  // 3.1 and 3.2
    const Llama3RopeScaling s{factor, 1.0, 4.0, 8192.0};
    std::optional<Llama3RopeScaling> back = RecoverLlama3RopeScaling(Llama3RopeFactors(s, 500000.0, 128), 500000.0);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->factor, factor);
    EXPECT_EQ(back->low_freq_factor, 1.0);
    EXPECT_EQ(back->high_freq_factor, 4.0);
    EXPECT_EQ(back->original_context, 8192.0);
  }
  // 3.2 1B/3B's head size of 64.
  std::optional<Llama3RopeScaling> small =
      RecoverLlama3RopeScaling(Llama3RopeFactors({32.0, 1.0, 4.0, 8192.0}, 500000.0, 64), 500000.0);
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->original_context, 8192.0);
  EXPECT_EQ(small->high_freq_factor, 4.0);
}

TEST(Llama3RopeTest, OtherParametersGiveTheSameTableBack) {
  ExpectRecovered({8.0, 1.0, 4.0, 16.0}, 10000.0, 16);      // one smooth entry (the test fixture)
  ExpectRecovered({4.0, 1.0, 2.0, 4096.0}, 500000.0, 128);  // another high factor
  ExpectRecovered({16.0, 1.0, 8.0, 32768.0}, 1e6, 128);
  ExpectRecovered({8.0, 1.0, 4.0, 1e12}, 10000.0, 16);      // nothing smooth: every pair at 1
  ExpectRecovered({8.0, 1.0, 4.0, 2.0}, 10000.0, 16);       // nothing smooth: every pair at the factor
  ExpectRecovered({2.0, 2.0, 8.0, 8192.0}, 500000.0, 128);  // low 2: found as low 1 at half the context
}

TEST(Llama3RopeTest, ATableNoParametersComputeIsNotRecovered) {
  std::vector<float> table = Llama3RopeFactors({8.0, 1.0, 4.0, 8192.0}, 500000.0, 128);
  std::vector<float> bent = table;
  for (float& v : bent) {
    if (v != 1.0f && v != 8.0f) {
      v *= 1.01f;
      break;
    }
  }
  EXPECT_FALSE(RecoverLlama3RopeScaling(bent, 500000.0).has_value());
  std::vector<float> falling(table.rbegin(), table.rend());
  EXPECT_FALSE(RecoverLlama3RopeScaling(falling, 500000.0).has_value());
  EXPECT_FALSE(RecoverLlama3RopeScaling({}, 500000.0).has_value());
  EXPECT_FALSE(RecoverLlama3RopeScaling({NAN, 1.0f}, 500000.0).has_value());
  EXPECT_FALSE(RecoverLlama3RopeScaling({0.5f, 0.25f}, 500000.0).has_value());
}

}  // namespace
}  // namespace modelsmith
