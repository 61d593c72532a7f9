// Every AVX2 kernel against its scalar reference, bit for bit, on random rows and on adversarial
// ones: zeros, negative zeros, denormals, +-Inf, NaN, huge values, exact ties, every FP16 value.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "workers/quant/bitsandbytes.h"
#include "workers/quant/ggml_legacy.h"
#include "workers/quant/ggml_iq4.h"
#include "workers/quant/half.h"
#include "workers/quant/iq_grid.h"
#include "workers/quant/iq_search.h"
#include "workers/quant/qkx2_search.h"
#include "workers/quant/quality.h"
#include "workers/quant/scale_search.h"
#include "workers/quant/simd_avx2.h"

namespace modelsmith {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

// Rows of 32 * 8 values: random normal, then blocks with each kind of trouble.
std::vector<std::vector<float>> Rows() {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> rows;
  for (int r = 0; r < 20; ++r) {
    std::vector<float> row(256);
    for (float& x : row) x = normal(rng) * std::pow(10.0f, static_cast<float>(r % 9) - 4);
    rows.push_back(row);
  }
  const std::vector<float> specials = {0.0f, -0.0f, 1e-40f, -1e-41f, kInf,  -kInf,  kNan,  3e38f, -3e38f,
                                       0.5f, -0.5f, 1.5f,   2.5f,    -2.5f, 127.0f, -8.0f, 8.0f,  1e-30f};
  for (float special : specials) {
    std::vector<float> row(256);
    for (size_t i = 0; i < row.size(); ++i) row[i] = i % 5 == 0 ? special : normal(rng);
    rows.push_back(row);
    rows.push_back(std::vector<float>(256, special));
  }
  std::vector<float> ties(256);
  for (size_t i = 0; i < ties.size(); ++i) ties[i] = static_cast<float>(static_cast<int>(i % 64) - 32) * 0.5f;
  rows.push_back(ties);
  return rows;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class SimdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CpuHasAvx2Fma16c()) GTEST_SKIP() << "this CPU has no AVX2/FMA/F16C; only the scalar kernels run here";
  }
};

TEST_F(SimdTest, F16DecodeMatchesScalarForEveryValue) {
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> simd(all.size()), scalar(all.size());
  DecodeF16Avx2(reinterpret_cast<const uint8_t*>(all.data()), all.size(), simd.data());
  for (size_t i = 0; i < all.size(); ++i) scalar[i] = Fp16ToFp32(all[i]);
  for (size_t i = 0; i < all.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &simd[i], 4);
    std::memcpy(&b, &scalar[i], 4);
    ASSERT_EQ(a, b) << "half 0x" << std::hex << i;
  }
}

TEST_F(SimdTest, Q8_0AndQ4_0EncodeAndDecodeMatchScalar) {
  for (const std::vector<float>& row : Rows()) {
    std::vector<uint8_t> simd(8 * 34), scalar(8 * 34);
    QuantizeRowQ8_0Avx2(row.data(), row.size(), simd.data());
    QuantizeRowQ8_0(row.data(), row.size(), scalar.data());
    ASSERT_EQ(simd, scalar) << "Q8_0, row starting " << row[0];
    std::vector<float> a(row.size()), b(row.size());
    DequantizeRowQ8_0Avx2(simd.data(), row.size(), a.data());
    DequantizeRowQ8_0(scalar.data(), row.size(), b.data());
    ASSERT_TRUE(SameBits(a, b));

    std::vector<uint8_t> simd4(8 * 18), scalar4(8 * 18);
    QuantizeRowQ4_0Avx2(row.data(), row.size(), simd4.data());
    QuantizeRowQ4_0(row.data(), row.size(), scalar4.data());
    ASSERT_EQ(simd4, scalar4) << "Q4_0, row starting " << row[0];
    DequantizeRowQ4_0Avx2(simd4.data(), row.size(), a.data());
    DequantizeRowQ4_0(scalar4.data(), row.size(), b.data());
    ASSERT_TRUE(SameBits(a, b));
  }
}

TEST_F(SimdTest, BnbInt8MatchesScalarIncludingOddLengths) {
  for (const std::vector<float>& row : Rows()) {
    for (size_t n : {size_t{256}, size_t{255}, size_t{7}, size_t{33}}) {
      std::vector<int8_t> simd(n), scalar(n);
      const float a = BnbInt8QuantizeRowAvx2(row.data(), n, simd.data());
      const float b = BnbInt8QuantizeRowScalar(row.data(), n, scalar.data());
      ASSERT_EQ(std::memcmp(&a, &b, 4), 0);
      ASSERT_EQ(simd, scalar) << "n=" << n << " row starting " << row[0];
      std::vector<float> ya(n), yb(n);
      BnbInt8DequantizeRowAvx2(simd.data(), n, a, ya.data());
      BnbInt8DequantizeRowScalar(scalar.data(), n, b, yb.data());
      ASSERT_TRUE(SameBits(ya, yb));
    }
  }
}

TEST_F(SimdTest, Bnb4MatchesScalarForNf4AndFp4IncludingPartialBlocksAndOddCounts) {
  for (const std::vector<float>& row : Rows()) {
    for (Bnb4Type type : {Bnb4Type::kNf4, Bnb4Type::kFp4}) {
      for (size_t n : {size_t{256}, size_t{255}, size_t{77}, size_t{5}}) {
        for (size_t block : {size_t{32}, size_t{64}}) {
          std::vector<uint8_t> a((n + 1) / 2), b((n + 1) / 2);
          std::vector<float> ma((n + block - 1) / block), mb(ma.size());
          Bnb4Quantize(type, row.data(), n, block, a.data(), ma.data());
          Bnb4QuantizeScalar(type, row.data(), n, block, b.data(), mb.data());
          ASSERT_EQ(a, b) << "n=" << n << " block=" << block << " row starting " << row[0];
          ASSERT_TRUE(SameBits(ma, mb));
        }
      }
    }
  }
}

TEST_F(SimdTest, QualityBlocksMatchTheScalarLaneOrder) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (size_t n : {size_t{256}, size_t{100}, size_t{7}}) {
    std::vector<float> s(n), r(n);
    for (size_t i = 0; i < n; ++i) {
      s[i] = normal(rng);
      r[i] = s[i] + normal(rng) * 0.01f;
    }
    float sig_simd[8] = {}, noi_simd[8] = {}, max_simd = 0;
    QualityBlockAvx2(s.data(), r.data(), n, sig_simd, noi_simd, &max_simd);
    float sig[8] = {}, noi[8] = {}, max_error = 0;
    for (size_t i = 0; i < n; ++i) {
      const float e = s[i] - r[i];
      sig[i % 8] += s[i] * s[i];
      noi[i % 8] += e * e;
      max_error = std::max(max_error, std::fabs(e));
    }
    EXPECT_EQ(std::memcmp(sig, sig_simd, sizeof sig), 0) << n;
    EXPECT_EQ(std::memcmp(noi, noi_simd, sizeof noi), 0) << n;
    EXPECT_EQ(max_error, max_simd);
    EXPECT_TRUE(AllFiniteAvx2(s.data(), n));
    s[n / 2] = kNan;
    EXPECT_FALSE(AllFiniteAvx2(s.data(), n));
  }
}

TEST_F(SimdTest, Qkx2SearchMatchesScalarForQ2KQ4KAndQ5KSettings) {
  struct Setting {
    int n, nmax, nstep;
    float rmin;
    bool use_mad;
  };
  const Setting settings[] = {{16, 3, 15, -0.5f, true}, {32, 15, 20, -1.0f, false}, {32, 31, 15, -0.5f, false}};
  int compared = 0;
  for (const std::vector<float>& row : Rows()) {
    for (const Setting& set : settings) {
      for (size_t start = 0; start + set.n <= row.size(); start += set.n) {
        const float* x = row.data() + start;
        float weights[32];
        for (int i = 0; i < set.n; ++i) weights[i] = set.use_mad ? std::fabs(x[i]) : 0.25f + std::fabs(x[i]);
        uint8_t l_simd[32], l_scalar[32], aux[32];
        float min_simd = 0, min_scalar = 0;
        const float a = MakeQkx2QuantsAvx2(set.n, set.nmax, x, weights, l_simd, &min_simd, aux, set.rmin, 0.1f,
                                           set.nstep, set.use_mad);
        const float b = MakeQkx2QuantsScalar(set.n, set.nmax, x, weights, l_scalar, &min_scalar, aux, set.rmin, 0.1f,
                                             set.nstep, set.use_mad);
        ASSERT_EQ(std::memcmp(&a, &b, 4), 0) << "nmax " << set.nmax << " at " << start << " of row starting " << row[0];
        ASSERT_EQ(std::memcmp(&min_simd, &min_scalar, 4), 0);
        ASSERT_EQ(std::memcmp(l_simd, l_scalar, set.n), 0);
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 1000);
}

TEST_F(SimdTest, Qkx2GroupSearchMatchesScalarPerGroup) {
  struct Setting {
    int n, nmax, nstep;
    float rmin, rdelta;
    bool use_mad;
  };
  // Q2_K, Q4_K, Q5_K, their importance-matrix searches, and no candidates at all.
  const Setting settings[] = {{16, 3, 15, -0.5f, 0.1f, true},   {32, 15, 20, -1.0f, 0.1f, false},
                              {32, 31, 15, -0.5f, 0.1f, false}, {32, 15, 36, -0.9f, 0.05f, false},
                              {16, 3, 36, -0.9f, 0.05f, false}, {32, 15, 0, -1.0f, 0.1f, false}};
  ;
  std::vector<float> values;
  for (const std::vector<float>& row : Rows()) {
    bool finite = true;
    for (float v : row) finite = finite && std::isfinite(v) && std::fabs(v) < 1e18f;
    if (finite) values.insert(values.end(), row.begin(), row.end());
  }
  values.insert(values.end(), 64, 0.25f);  // constant groups
  values.insert(values.end(), 64, -3.0f);
  int compared = 0;
  for (const Setting& set : settings) {
    const size_t span = 8 * static_cast<size_t>(set.n);
    for (size_t start = 0; start + span <= values.size(); start += span) {
      const float* x = values.data() + start;
      std::vector<float> weights(span);
      for (size_t i = 0; i < span; ++i) weights[i] = set.use_mad ? std::fabs(x[i]) : 0.25f + std::fabs(x[i]);
      uint8_t l_simd[256], l_scalar[256], aux[32];
      float scales[8], mins[8];
      MakeQkx2Quants8GroupsAvx2(set.n, set.nmax, x, weights.data(), l_simd, scales, mins, set.rmin, set.rdelta,
                                set.nstep, set.use_mad);
      for (int g = 0; g < 8; ++g) {
        float min = 0;
        const float scale =
            MakeQkx2QuantsScalar(set.n, set.nmax, x + g * set.n, weights.data() + g * set.n, l_scalar + g * set.n, &min,
                                 aux, set.rmin, set.rdelta, set.nstep, set.use_mad);
        ASSERT_EQ(std::memcmp(&scales[g], &scale, 4), 0)
            << "nmax " << set.nmax << " group " << g << " at " << start << ": " << scales[g] << " vs " << scale;
        ASSERT_EQ(std::memcmp(&mins[g], &min, 4), 0);
        ++compared;
      }
      ASSERT_EQ(std::memcmp(l_simd, l_scalar, span), 0);
    }
  }
  EXPECT_GT(compared, 1000);
}

TEST_F(SimdTest, QxGroupSearchMatchesScalarPerGroup) {
  std::vector<float> values;
  for (const std::vector<float>& row : Rows()) values.insert(values.end(), row.begin(), row.end());
  values.insert(values.end(), 256, 0.0f);  // all-zero groups
  int compared = 0;
  for (const int n : {16, 32}) {
    for (const int nmax : {4, 32}) {
      for (const bool weighted : {false, true}) {
        const size_t span = 8 * static_cast<size_t>(n);
        for (size_t start = 0; start + span <= values.size(); start += span) {
          const float* x = values.data() + start;
          std::vector<float> qw(span);
          for (size_t i = 0; i < span; ++i) qw[i] = 0.25f + std::fabs(x[i]) * (i % 3);
          int8_t l_simd[256], l_scalar[256];
          float scales[8];
          MakeQx8GroupsAvx2(n, nmax, x, l_simd, weighted ? qw.data() : nullptr, scales);
          for (int g = 0; g < 8; ++g) {
            const float scale =
                MakeQxQuantsScalar(n, nmax, x + g * n, l_scalar + g * n, weighted ? qw.data() + g * n : nullptr);
            ASSERT_EQ(std::memcmp(&scales[g], &scale, 4), 0)
                << "n " << n << " nmax " << nmax << " group " << g << " at " << start;
            ++compared;
          }
          ASSERT_EQ(std::memcmp(l_simd, l_scalar, span), 0) << "n " << n << " nmax " << nmax << " at " << start;
        }
      }
    }
  }
  EXPECT_GT(compared, 2000);
}

TEST_F(SimdTest, QxSearchMatchesScalarForQ6KQ3KAndLegacySettings) {
  struct Setting {
    int n, nmax;
    bool weighted;
  };
  // Q6_K (x^2 and importance weights), Q3_K with an importance matrix, Q4_0/Q5_0/Q8_0-style blocks.
  const Setting settings[] = {{16, 32, false}, {16, 32, true}, {16, 4, true},
                              {32, 8, true},   {32, 16, true}, {32, 128, false}};
  int compared = 0;
  for (const std::vector<float>& row : Rows()) {
    for (const Setting& set : settings) {
      for (size_t start = 0; start + set.n <= row.size(); start += set.n) {
        const float* x = row.data() + start;
        float weights[32];
        for (int i = 0; i < set.n; ++i) weights[i] = 0.25f + std::fabs(x[i]) * (i % 3);
        const float* qw = set.weighted ? weights : nullptr;
        int8_t l_simd[32], l_scalar[32];
        const float a = MakeQxQuantsAvx2(set.n, set.nmax, x, l_simd, qw);
        const float b = MakeQxQuantsScalar(set.n, set.nmax, x, l_scalar, qw);
        ASSERT_EQ(std::memcmp(&a, &b, 4), 0) << "nmax " << set.nmax << " at " << start << " of row starting " << row[0];
        ASSERT_EQ(std::memcmp(l_simd, l_scalar, set.n), 0);
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 1000);
}

TEST_F(SimdTest, IqNeighbourSearchMatchesScalarOnEveryGrid) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  int compared = 0, with_ties = 0;
  for (IqGridKind kind : {IqGridKind::kIQ2XXS, IqGridKind::kIQ2XS, IqGridKind::kIQ2S, IqGridKind::kIQ1S,
                          IqGridKind::kIQ3XXS, IqGridKind::kIQ3S}) {
    const IqGrid& grid = IqGrid::Get(kind);
    const int levels = grid.dims() == 8 ? 3 : 8;
    for (int trial = 0; trial < 4000; ++trial) {
      int8_t code_levels[8];
      for (int i = 0; i < grid.dims(); ++i) code_levels[i] = static_cast<int8_t>(rng() % levels);
      const uint32_t code = grid.CodeOf(code_levels);
      if (grid.IndexOf(code) >= 0) continue;
      int count = 0;
      const uint16_t* neighbours = grid.Neighbours(code, &count);
      float xval[8], weight[8];
      // Every fourth trial puts xval on lattice midpoints with equal weights: exact ties.
      const bool ties = trial % 4 == 0;
      for (int i = 0; i < grid.dims(); ++i) {
        xval[i] = ties ? 2.0f * code_levels[i] + 1.0f : unit(rng) * 2.0f * levels;
        weight[i] = ties ? 1.0f : unit(rng);
      }
      const float scale = ties ? 1.0f : 0.5f + unit(rng);
      const int a = IqNearestNeighbourAvx2(grid.dims(), grid.FloatPoints(), neighbours, count, xval, weight, scale);
      const int b = IqNearestNeighbourScalar(grid.dims(), grid.FloatPoints(), neighbours, count, xval, weight, scale);
      ASSERT_EQ(a, b) << "grid " << static_cast<int>(kind) << " code " << code << " of " << count << " neighbours";
      ASSERT_GE(a, 0);
      ++compared;
      with_ties += ties;
    }
  }
  EXPECT_GT(compared, 10000);
  EXPECT_GT(with_ties, 2000);
}

TEST_F(SimdTest, Iq4CandidateFitsMatchScalar) {
  int compared = 0;
  for (const std::vector<float>& row : Rows()) {
    for (size_t start = 0; start + 32 <= row.size(); start += 32) {
      const float* x = row.data() + start;
      float amax = 0, max = 0, weight[32];
      bool finite = true;
      for (int j = 0; j < 32; ++j) {
        weight[j] = 0.1f + x[j] * x[j] * (j % 4);
        finite = finite && std::isfinite(weight[j]);
        if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
      }
      if (!finite || amax < 1e-15f) continue;  // the quantizers take finite blocks only
      float ids[kIq4Candidates];               // BlockScale's candidates, plus a few past the table's ends
      for (int c = 0; c < kIq4Candidates; ++c) ids[c] = (c - 7 - 127 + (c == 15 ? 300 : 0)) / max;
      float qx_simd[kIq4Candidates], q2_simd[kIq4Candidates], qx[kIq4Candidates], q2[kIq4Candidates];
      Iq4CandidateFitsAvx2(x, weight, ids, qx_simd, q2_simd);
      Iq4CandidateFitsScalar(x, weight, ids, qx, q2);
      ASSERT_EQ(std::memcmp(qx_simd, qx, sizeof qx), 0) << "block at " << start << " of row starting " << row[0];
      ASSERT_EQ(std::memcmp(q2_simd, q2, sizeof q2), 0);
      ++compared;
    }
  }
  EXPECT_GT(compared, 200);
}

TEST_F(SimdTest, IqCandidateSearchMatchesScalarForEveryIqSearch) {
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  struct Case {
    IqGridKind kind;
    IqSearch search;
  };
  // The settings ggml_iq2.cc and ggml_iq3.cc use.
  const Case cases[] = {{IqGridKind::kIQ2XXS, {32, 3, 0.1f, 6, IqSearch::Resnap::kAllAlways, true}},
                        {IqGridKind::kIQ2XS, {16, 3, 0.1f, 9, IqSearch::Resnap::kOffGridVectors, true}},
                        {IqGridKind::kIQ2S, {16, 3, 0.1f, 9, IqSearch::Resnap::kOffGridVectors, true}},
                        {IqGridKind::kIQ3XXS, {32, 8, 0.2f, 15, IqSearch::Resnap::kOffGridVectors, true}},
                        {IqGridKind::kIQ3S, {32, 8, 0.2f, 9, IqSearch::Resnap::kAllWhenAnyOffGrid, false}}};
  int compared = 0;
  for (const Case& c : cases) {
    const IqGrid& grid = IqGrid::Get(c.kind);
    for (int trial = 0; trial < 2000; ++trial) {
      float xval[32], weight[32], waux[32], max = 0;
      for (int i = 0; i < c.search.n; ++i) {
        // Every eighth block is coarse (many equal magnitudes, so ties and repeated codes).
        xval[i] = trial % 8 == 0 ? static_cast<float>(rng() % 4) : std::fabs(normal(rng));
        weight[i] = trial % 8 == 0 ? 1.0f : 0.01f + std::fabs(normal(rng));
        waux[i] = std::sqrt(weight[i]);
        max = std::max(max, xval[i]);
      }
      if (max == 0) continue;
      IqCandidateFits scalar;
      MeasureIqCandidatesScalar(grid, c.search, xval, weight, waux, max, &scalar);
      for (const bool avx512 : {false, true}) {
        if (avx512 && !CpuHasAvx512()) continue;
        IqCandidateFits simd;
        (avx512 ? MeasureIqCandidatesAvx512 : MeasureIqCandidatesAvx2)(grid, c.search, xval, weight, waux, max, &simd);
        const int candidates = 2 * c.search.half_tries + 1, vectors = c.search.n / grid.dims();
        for (int k = 0; k < candidates; ++k) {
          ASSERT_EQ(std::memcmp(&simd.sumqx[k], &scalar.sumqx[k], 4), 0)
              << "grid " << static_cast<int>(c.kind) << (avx512 ? " AVX-512" : " AVX2");
          ASSERT_EQ(std::memcmp(&simd.sumq2[k], &scalar.sumq2[k], 4), 0);
          for (int v = 0; v < vectors; ++v) {
            ASSERT_EQ(simd.index[k][v], scalar.index[k][v]) << "candidate " << k << " vector " << v;
            ASSERT_EQ(simd.on_grid[k][v], scalar.on_grid[k][v]);
          }
        }
        ++compared;
      }
    }
  }
  EXPECT_GT(compared, 9000);  // AVX2 alone; twice that where the CPU has AVX-512
}

TEST_F(SimdTest, CastsToBf16AndFp16EqualTheScalarOnesWithTheSameCounts) {
  std::mt19937 rng(11);
  std::vector<float> x;
  for (const std::vector<float>& row : Rows()) x.insert(x.end(), row.begin(), row.end());
  for (int i = 0; i < 1 << 20; ++i) {  // random bit patterns: every exponent, NaN payloads, subnormals
    const uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, 4);
    x.push_back(f);
  }
  for (float f : {65504.0f, 65519.0f, 65520.0f, 3.3895314e38f, 3.4028235e38f, 1e-45f}) x.push_back(f);
  x.push_back(1.0f);  // an odd length exercises the tail
  for (bool bf16 : {true, false}) {
    std::vector<uint16_t> fast(x.size()), slow(x.size());
    uint64_t nan_fast = 0, over_fast = 0, nan_slow = 0, over_slow = 0;
    (bf16 ? Fp32ToBf16RowAvx2 : Fp32ToFp16RowAvx2)(x.data(), x.size(), fast.data(), &nan_fast, &over_fast);
    for (size_t i = 0; i < x.size(); ++i) {
      slow[i] = bf16 ? Fp32ToBf16(x[i]) : Fp32ToFp16(x[i]);
      if (std::isnan(x[i]))
        ++nan_slow;
      else if ((slow[i] & 0x7FFF) == (bf16 ? 0x7F80 : 0x7C00) && !std::isinf(x[i]))
        ++over_slow;
    }
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(fast[i], slow[i]) << (bf16 ? "bf16 " : "f16 ") << i << " " << x[i];
    EXPECT_EQ(nan_fast, nan_slow);
    EXPECT_EQ(over_fast, over_slow);
    EXPECT_GT(over_slow, 0u);
  }
}

TEST_F(SimdTest, LowRankRowEqualsStdFmaInRankOrder) {
  const std::vector<std::vector<float>> rows = Rows();
  for (size_t rank : {size_t{1}, size_t{4}, size_t{16}}) {
    for (size_t cols : {size_t{256}, size_t{255}, size_t{40}, size_t{7}}) {
      std::vector<float> coef(rank), basis(rank * cols);
      for (size_t k = 0; k < rank; ++k) {
        coef[k] = rows[k % rows.size()][k];
        for (size_t j = 0; j < cols; ++j) basis[k * cols + j] = rows[(k + 3) % rows.size()][j];
      }
      for (const std::vector<float>& row : rows) {
        std::vector<float> simd(row.begin(), row.begin() + cols), scalar = simd;
        LowRankRowAvx2(coef.data(), basis.data(), rank, cols, simd.data());
        for (size_t k = 0; k < rank; ++k) {
          for (size_t j = 0; j < cols; ++j) scalar[j] = std::fma(coef[k], basis[k * cols + j], scalar[j]);
        }
        ASSERT_TRUE(SameBits(simd, scalar)) << "rank " << rank << " cols " << cols;
      }
    }
  }
}

}  // namespace
}  // namespace modelsmith
