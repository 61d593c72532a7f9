// LowRankUpdate against the formulas of formats.md §8 written out index by index here, in double.
#include "workers/quant/low_rank_update.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace modelsmith {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void ExpectNear(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << "element " << i;
}

TEST(LowRankUpdate, LinearAddsScaledBTimesA) {
  const uint64_t out = 3, in = 4, r = 2;
  std::vector<float> w = Random(out * in, 1), b = Random(out * r, 2), a = Random(r * in, 3);
  std::vector<double> want(out * in);
  for (uint64_t o = 0; o < out; ++o) {
    for (uint64_t i = 0; i < in; ++i) {
      double d = 0;
      for (uint64_t k = 0; k < r; ++k) d += double(b[o * r + k]) * a[k * in + i];
      want[o * in + i] = w[o * in + i] + 0.5 * d;
    }
  }
  LowRankUpdate u(b, a, out, r, in, 0.5, 1.0, false, {});
  EXPECT_EQ(u.base_rows(), out);
  EXPECT_EQ(u.base_cols(), in);
  u.ApplyRows(0, 1, w.data());  // rows one call at a time or several: the same
  u.ApplyRows(1, 2, w.data() + in);
  ExpectNear(w, want);
}

TEST(LowRankUpdate, FanInFanOutUpdatesTheTransposedWeight) {
  const uint64_t out = 3, in = 5, r = 2;
  std::vector<float> w = Random(in * out, 4), b = Random(out * r, 5), a = Random(r * in, 6);  // w is [in, out]
  std::vector<double> want(in * out);
  for (uint64_t i = 0; i < in; ++i) {
    for (uint64_t o = 0; o < out; ++o) {
      double d = 0;
      for (uint64_t k = 0; k < r; ++k) d += double(b[o * r + k]) * a[k * in + i];
      want[i * out + o] = w[i * out + o] + 2.0 * d;
    }
  }
  LowRankUpdate u(b, a, out, r, in, 2.0, 1.0, true, {});
  EXPECT_EQ(u.base_rows(), in);
  EXPECT_EQ(u.base_cols(), out);
  u.ApplyRows(0, in, w.data());
  ExpectNear(w, want);
}

TEST(LowRankUpdate, KxKConvolutionSumsOverRankPerKernelPosition) {
  // delta[o, i, h, x] = sum_k B[o, k, 0, 0] * A[k, i, h, x]  (kohya: conv2d(down^T, up)^T)
  const uint64_t out = 2, in = 3, kh = 3, kw = 3, r = 2;
  std::vector<float> w = Random(out * in * kh * kw, 7), b = Random(out * r, 8), a = Random(r * in * kh * kw, 9);
  std::vector<double> want(w.size());
  for (uint64_t o = 0; o < out; ++o)
    for (uint64_t i = 0; i < in; ++i)
      for (uint64_t h = 0; h < kh; ++h)
        for (uint64_t x = 0; x < kw; ++x) {
          double d = 0;
          for (uint64_t k = 0; k < r; ++k) d += double(b[o * r + k]) * a[((k * in + i) * kh + h) * kw + x];
          const uint64_t at = ((o * in + i) * kh + h) * kw + x;
          want[at] = w[at] + 0.25 * d;
        }
  LowRankUpdate u(b, a, out, r, in * kh * kw, 0.25, 1.0, false, {});
  u.ApplyRows(0, out, w.data());
  ExpectNear(w, want);
}

TEST(LowRankUpdate, DoraRescalesEachRowToItsMagnitude) {
  const uint64_t out = 3, in = 4, r = 2;
  std::vector<float> w = Random(out * in, 10), b = Random(out * r, 11), a = Random(r * in, 12);
  std::vector<float> m = {0.5f, 2.0f, 1.5f};
  std::vector<double> want(out * in);
  for (uint64_t o = 0; o < out; ++o) {
    std::vector<double> v(in);
    double norm = 0;
    for (uint64_t i = 0; i < in; ++i) {
      double d = 0;
      for (uint64_t k = 0; k < r; ++k) d += double(b[o * r + k]) * a[k * in + i];
      v[i] = w[o * in + i] + 0.75 * d;
      norm += v[i] * v[i];
    }
    for (uint64_t i = 0; i < in; ++i) want[o * in + i] = m[o] / std::sqrt(norm) * v[i];
  }
  LowRankUpdate u(b, a, out, r, in, 0.75, 1.0, false, m);
  u.ApplyRows(0, out, w.data());
  ExpectNear(w, want);
  for (uint64_t o = 0; o < out; ++o) {
    double norm = 0;
    for (uint64_t i = 0; i < in; ++i) norm += double(w[o * in + i]) * w[o * in + i];
    EXPECT_NEAR(std::sqrt(norm), m[o], 1e-5);
  }
}

TEST(LowRankUpdate, StrengthScalesTheChange) {
  const uint64_t out = 2, in = 3, r = 1;
  std::vector<float> w = Random(out * in, 13), b = Random(out * r, 14), a = Random(r * in, 15);
  std::vector<float> full = w, half = w, dora_full = w, dora_half = w;
  LowRankUpdate(b, a, out, r, in, 1.0, 1.0, false, {}).ApplyRows(0, out, full.data());
  LowRankUpdate(b, a, out, r, in, 1.0, 0.5, false, {}).ApplyRows(0, out, half.data());
  LowRankUpdate(b, a, out, r, in, 1.0, 1.0, false, {1.0f, 3.0f}).ApplyRows(0, out, dora_full.data());
  LowRankUpdate(b, a, out, r, in, 1.0, 0.5, false, {1.0f, 3.0f}).ApplyRows(0, out, dora_half.data());
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_NEAR(half[i], w[i] + 0.5 * (full[i] - w[i]), 1e-6);
    EXPECT_NEAR(dora_half[i], w[i] + 0.5 * (dora_full[i] - w[i]), 1e-6);
  }
}

}  // namespace
}  // namespace modelsmith
