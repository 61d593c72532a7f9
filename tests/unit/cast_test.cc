// Float casts against hand-checked values: ties, subnormals, NaN, +-Inf, overflow, saturation.
#include "workers/quant/cast.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace modelsmith {
namespace {

template <typename Out, typename In>
Out CastOne(DType from, DType to, In x, CastCounts* counts = nullptr) {
  CastCounts local;
  Out out{};
  CastElements(from, to, reinterpret_cast<const std::byte*>(&x), 1, reinterpret_cast<std::byte*>(&out),
               counts ? counts : &local);
  return out;
}

uint16_t F32ToF16(float x, CastCounts* c = nullptr) { return CastOne<uint16_t>(DType::kF32, DType::kF16, x, c); }
uint16_t F32ToBf16(float x, CastCounts* c = nullptr) { return CastOne<uint16_t>(DType::kF32, DType::kBF16, x, c); }
uint8_t F32ToE4M3(float x, CastCounts* c = nullptr) { return CastOne<uint8_t>(DType::kF32, DType::kF8E4M3, x, c); }
uint8_t F32ToE5M2(float x, CastCounts* c = nullptr) { return CastOne<uint8_t>(DType::kF32, DType::kF8E5M2, x, c); }

TEST(CastTest, F32ToF16RoundsTiesToEvenAndOverflowsToInf) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3C00);
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie, even stays
  EXPECT_EQ(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie, odd rounds up
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65519.0f), 0x7BFF);
  CastCounts counts;
  EXPECT_EQ(F32ToF16(65520.0f, &counts), 0x7C00);  // rounds past the largest finite: Inf
  EXPECT_EQ(F32ToF16(-1e6f, &counts), 0xFC00);
  EXPECT_EQ(counts.overflowed, 2u);
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -25)), 0x0000);  // tie with zero: even
  EXPECT_EQ(F32ToF16(std::ldexp(3.0f, -26)), 0x0001);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  CastCounts specials;
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::infinity(), &specials), 0x7C00);
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::quiet_NaN(), &specials) & 0x7E00, 0x7E00);
  EXPECT_EQ(specials.overflowed, 0u);  // Inf was Inf already
  EXPECT_EQ(specials.nan, 1u);
}

TEST(CastTest, F32ToBf16RoundsTiesToEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3F80);
  EXPECT_EQ(F32ToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(F32ToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
  CastCounts counts;
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::max(), &counts), 0x7F80);
  EXPECT_EQ(counts.overflowed, 1u);
  EXPECT_EQ(F32ToBf16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(F32ToBf16(-std::numeric_limits<float>::infinity()), 0xFF80);
}

TEST(CastTest, F32ToE4M3SaturatesAndHasNoInf) {
  EXPECT_EQ(F32ToE4M3(0.0f), 0x00);
  EXPECT_EQ(F32ToE4M3(1.0f), 0x38);
  EXPECT_EQ(F32ToE4M3(-1.0f), 0xB8);
  EXPECT_EQ(F32ToE4M3(-2.0f), 0xC0);
  EXPECT_EQ(F32ToE4M3(448.0f), 0x7E);
  EXPECT_EQ(F32ToE4M3(1.0f + 1.0f / 16), 0x38);      // tie between 1 and 1.125: even
  EXPECT_EQ(F32ToE4M3(1.0f + 3.0f / 16), 0x3A);      // tie between 1.125 and 1.25: even (1.25)
  EXPECT_EQ(F32ToE4M3(std::ldexp(1.0f, -9)), 0x01);  // smallest subnormal
  EXPECT_EQ(F32ToE4M3(std::ldexp(1.0f, -10)), 0x00);
  EXPECT_EQ(F32ToE4M3(std::ldexp(7.0f, -9)), 0x07);    // largest subnormal
  EXPECT_EQ(F32ToE4M3(std::ldexp(15.0f, -10)), 0x08);  // rounds up into the first normal
  CastCounts counts;
  EXPECT_EQ(F32ToE4M3(464.0f, &counts), 0x7E);  // the tie above 448 rounds to even: 448, not saturated
  EXPECT_EQ(counts.saturated, 0u);
  EXPECT_EQ(F32ToE4M3(465.0f, &counts), 0x7E);
  EXPECT_EQ(F32ToE4M3(-1e9f, &counts), 0xFE);
  EXPECT_EQ(F32ToE4M3(std::numeric_limits<float>::infinity(), &counts), 0x7E);
  EXPECT_EQ(counts.saturated, 3u);
  EXPECT_EQ(F32ToE4M3(std::numeric_limits<float>::quiet_NaN()), 0x7F);
}

TEST(CastTest, F32ToE5M2SaturatesFiniteValuesButKeepsInf) {
  EXPECT_EQ(F32ToE5M2(1.0f), 0x3C);
  EXPECT_EQ(F32ToE5M2(-1.0f), 0xBC);
  EXPECT_EQ(F32ToE5M2(57344.0f), 0x7B);
  CastCounts counts;
  EXPECT_EQ(F32ToE5M2(61440.0f, &counts), 0x7B);
  EXPECT_EQ(counts.saturated, 1u);
  EXPECT_EQ(F32ToE5M2(std::numeric_limits<float>::infinity()), 0x7C);
  EXPECT_EQ(F32ToE5M2(-std::numeric_limits<float>::infinity()), 0xFC);
  EXPECT_EQ(F32ToE5M2(std::ldexp(1.0f, -16)), 0x01);
  EXPECT_EQ(F32ToE5M2(std::numeric_limits<float>::quiet_NaN()) & 0x7F, 0x7E);
}

TEST(CastTest, F64RoundsOnceNotThroughF32) {
  // Just above the tie between 1 and 1 + 2^-10: through F32 the excess is lost and the tie rounds
  // down; rounding once from F64 goes up.
  const double x = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  EXPECT_EQ(CastOne<uint16_t>(DType::kF64, DType::kF16, x), 0x3C01);
  EXPECT_EQ(CastOne<float>(DType::kF64, DType::kF32, 0.1), 0.1f);
}

TEST(CastTest, EveryF16AndE4M3ValueSurvivesARoundTripThroughF32) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    const float f = CastOne<float>(DType::kF16, DType::kF32, h);
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToF16(f), h) << bits;
    ASSERT_EQ(CastOne<uint16_t>(DType::kF16, DType::kBF16, h), F32ToBf16(f)) << bits;  // exact decode either way
  }
  for (uint32_t bits = 0; bits < 256; ++bits) {
    const float f = CastOne<float>(DType::kF8E4M3, DType::kF32, static_cast<uint8_t>(bits));
    if ((bits & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(f)) << bits;
      continue;
    }
    ASSERT_EQ(F32ToE4M3(f), bits) << bits;
  }
  for (uint32_t bits = 0; bits < 256; ++bits) {
    const float f = CastOne<float>(DType::kF8E5M2, DType::kF32, static_cast<uint8_t>(bits));
    if (std::isnan(f)) continue;
    ASSERT_EQ(F32ToE5M2(f), bits) << bits;
  }
}

TEST(CastTest, ManyElementsAtOnce) {
  std::vector<float> in = {1.0f, -2.0f, 0.5f, 65520.0f};
  std::vector<uint16_t> out(in.size());
  CastCounts counts;
  CastElements(DType::kF32, DType::kF16, reinterpret_cast<const std::byte*>(in.data()), in.size(),
               reinterpret_cast<std::byte*>(out.data()), &counts);
  EXPECT_EQ(out, (std::vector<uint16_t>{0x3C00, 0xC000, 0x3800, 0x7C00}));
  EXPECT_EQ(counts.overflowed, 1u);
}

}  // namespace
}  // namespace modelsmith
