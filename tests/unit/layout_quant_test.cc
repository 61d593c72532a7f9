// The bitsandbytes, optimum-quanto and ChatGLM kernels on hand-checked rows: exact codes for ties
// (round half to even), all-zero rows and blocks, negative extremes and odd lengths, derived from
// the rules in formats.md §5-7; plus round-trip error bounds on random data.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "workers/quant/bitsandbytes.h"
#include "workers/quant/chatglm.h"
#include "workers/quant/half.h"
#include "workers/quant/quanto.h"

namespace modelsmith {
namespace {

std::vector<float> RandomValues(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> v(n);
  for (float& x : v) x = RoundTo(StoredFloat::kF16, normal(rng));
  return v;
}

double RelativeRmse(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, sig = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err += (a[i] - b[i]) * (a[i] - b[i]);
    sig += a[i] * a[i];
  }
  return std::sqrt(err / sig);
}

TEST(BnbInt8, RowCodesRoundHalfToEven) {
  const float row[] = {1.0f, -2.0f, 0.5f, 4.0f};
  int8_t q[4];
  EXPECT_EQ(BnbInt8QuantizeRow(row, 4, q), 4.0f);
  // factor 127/4 = 31.75: 31.75 -> 32, -63.5 -> -64 (tie to even), 15.875 -> 16, 127.
  EXPECT_EQ(q[0], 32);
  EXPECT_EQ(q[1], -64);
  EXPECT_EQ(q[2], 16);
  EXPECT_EQ(q[3], 127);
  const float negative[] = {-8.0f, 2.0f};
  EXPECT_EQ(BnbInt8QuantizeRow(negative, 2, q), 8.0f);
  EXPECT_EQ(q[0], -127);
  EXPECT_EQ(q[1], 32);  // 31.75
}

TEST(BnbInt8, AllZeroRowIsZeroCodesAndZeroScale) {
  const float row[3] = {0, 0, 0};
  int8_t q[3] = {1, 1, 1};
  EXPECT_EQ(BnbInt8QuantizeRow(row, 3, q), 0.0f);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[2], 0);
}

TEST(BnbInt8, RoundTripWithinHalfAStep) {
  const std::vector<float> x = RandomValues(4096, 1);
  std::vector<int8_t> q(x.size());
  const float scb = BnbInt8QuantizeRow(x.data(), x.size(), q.data());
  std::vector<float> y(x.size());
  BnbInt8DequantizeRow(q.data(), q.size(), scb, y.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_LE(std::fabs(x[i] - y[i]), scb / 127 * 0.5001f) << i;
}

TEST(Bnb4, Nf4CodesAndHighNibbleFirst) {
  const float x[] = {1.0f, -1.0f, 0.0f, 0.5f, -0.09105003625154495f};
  uint8_t packed[3];
  float absmax[1];
  Bnb4Quantize(Bnb4Type::kNf4, x, 5, 64, packed, absmax);
  EXPECT_EQ(absmax[0], 1.0f);
  EXPECT_EQ(packed[0], 0xF0);  // 1.0 -> 15 (high), -1.0 -> 0 (low)
  EXPECT_EQ(packed[1], 0x7C);  // 0 -> 7; 0.5 is nearer 0.4407 (12) than 0.5626 (13)
  EXPECT_EQ(packed[2], 0x60);  // odd count: the last code high, a zero nibble low
}

TEST(Bnb4, PartialLastBlockHasItsOwnAbsmax) {
  const float x[] = {2.0f, -1.0f, 0.25f};  // blocks of 2: {2, -1}, {0.25}
  uint8_t packed[2];
  float absmax[2];
  Bnb4Quantize(Bnb4Type::kNf4, x, 3, 2, packed, absmax);
  EXPECT_EQ(absmax[0], 2.0f);
  EXPECT_EQ(absmax[1], 0.25f);
  EXPECT_EQ(packed[1] >> 4, 15);  // 0.25 / 0.25 = 1
}

TEST(Bnb4, AllZeroBlockTakesIndexZeroLikeArgminOverNan) {
  const float x[4] = {0, 0, 0, 0};
  uint8_t packed[2];
  float absmax[1];
  Bnb4Quantize(Bnb4Type::kNf4, x, 4, 64, packed, absmax);
  EXPECT_EQ(absmax[0], 0.0f);
  EXPECT_EQ(packed[0], 0x00);
  float y[4];
  Bnb4Dequantize(Bnb4Type::kNf4, packed, 4, 64, absmax, y);
  for (float v : y) EXPECT_EQ(v, 0.0f);
}

TEST(Bnb4, Fp4CodesInBitPatternOrder) {
  const float x[] = {1.0f, 0.5f, -0.25f, 0.0f};
  uint8_t packed[2];
  float absmax[1];
  Bnb4Quantize(Bnb4Type::kFp4, x, 4, 64, packed, absmax);
  EXPECT_EQ(packed[0], 0x35);  // 1.0 is code 3, 0.5 is code 5
  EXPECT_EQ(packed[1], 0xF0);  // -0.25 is code 15, 0 is code 0 (not 8: the first on ties)
  EXPECT_EQ(Bnb4QuantMap(Bnb4Type::kFp4)[2], 8.0f / 12.0f);
  EXPECT_EQ(Bnb4QuantMap(Bnb4Type::kFp4)[9], -0.0625f / 12.0f);
}

TEST(Bnb4, RoundTripErrorIsBounded) {
  for (Bnb4Type type : {Bnb4Type::kNf4, Bnb4Type::kFp4}) {
    const std::vector<float> x = RandomValues(64 * 50 + 7, 2);
    std::vector<uint8_t> packed((x.size() + 1) / 2);
    std::vector<float> absmax((x.size() + 63) / 64), y(x.size());
    Bnb4Quantize(type, x.data(), x.size(), 64, packed.data(), absmax.data());
    Bnb4Dequantize(type, packed.data(), x.size(), 64, absmax.data(), y.data());
    EXPECT_LT(RelativeRmse(x, y), type == Bnb4Type::kNf4 ? 0.12 : 0.2);
  }
}

TEST(BnbDoubleQuant, DynamicMapIsSortedSignedAndContainsTheSmallestMeans) {
  const std::array<float, 256>& map = BnbDynamicMap();
  EXPECT_EQ(map.back(), 1.0f);
  EXPECT_TRUE(std::is_sorted(map.begin(), map.end()));
  EXPECT_EQ(std::set<float>(map.begin(), map.end()).size(), 256u);
  const float smallest = 1e-6f * 0.55f;  // 1e-6 * mean(linspace(0.1, 1, 2))
  EXPECT_NE(std::find(map.begin(), map.end(), smallest), map.end());
  EXPECT_NE(std::find(map.begin(), map.end(), -smallest), map.end());
  EXPECT_NE(std::find(map.begin(), map.end(), 0.0f), map.end());
}

TEST(BnbDoubleQuant, NestedAbsmaxRoundTripsClosely) {
  std::vector<float> absmax(1000);
  for (size_t i = 0; i < absmax.size(); ++i) absmax[i] = 0.01f + 0.001f * static_cast<float>(i % 37);
  const NestedAbsmax nested = BnbNestAbsmax(absmax);
  EXPECT_EQ(nested.codes.size(), 1000u);
  EXPECT_EQ(nested.nested_absmax.size(), 4u);  // ceil(1000 / 256)
  double mean = 0;
  for (float a : absmax) mean += a;
  EXPECT_NEAR(nested.offset, mean / 1000, 1e-7);
  std::vector<float> back(absmax.size());
  BnbUnnestAbsmax(nested, back);
  for (size_t i = 0; i < absmax.size(); ++i) EXPECT_NEAR(back[i], absmax[i], 0.02 * absmax[i]) << i;
}

TEST(PythonFloatRepr, MatchesPythonsLayout) {
  EXPECT_EQ(PythonFloatRepr(0.1), "0.1");
  EXPECT_EQ(PythonFloatRepr(1.0), "1.0");
  EXPECT_EQ(PythonFloatRepr(123.5), "123.5");
  EXPECT_EQ(PythonFloatRepr(0.0001), "0.0001");
  EXPECT_EQ(PythonFloatRepr(1e-05), "1e-05");
  EXPECT_EQ(PythonFloatRepr(1.5e-07), "1.5e-07");
  EXPECT_EQ(PythonFloatRepr(1e16), "1e+16");
  EXPECT_EQ(PythonFloatRepr(-0.012345678), "-0.012345678");
  EXPECT_EQ(PythonFloatRepr(static_cast<double>(0.1f)), "0.10000000149011612");
}

TEST(QuantoInt8, ScaleFromAbsmaxAndTiesToEven) {
  const float row[] = {127.0f, -3.5f, 2.5f, RoundTo(StoredFloat::kF16, 0.49f)};
  int8_t q[4];
  EXPECT_EQ(QuantoInt8QuantizeRow(StoredFloat::kF16, row, 4, q), 1.0f);
  EXPECT_EQ(q[0], 127);
  EXPECT_EQ(q[1], -4);
  EXPECT_EQ(q[2], 2);
  EXPECT_EQ(q[3], 0);
}

TEST(QuantoInt8, QuotientIsRoundedToTheWeightDtypeBeforeRounding) {
  // 100.49 / 1 in FP16 is 100.5 (the spacing is 1/16), which then ties to even: 100. In FP32 it
  // stays 100.49 and also gives 100; 100.53 shows the difference: FP16 100.5 -> 100, FP32 -> 101.
  const float row[] = {127.0f, 100.53f};
  int8_t q[2];
  QuantoInt8QuantizeRow(StoredFloat::kF16, row, 2, q);
  EXPECT_EQ(q[1], 100);
  QuantoInt8QuantizeRow(StoredFloat::kF32, row, 2, q);
  EXPECT_EQ(q[1], 101);
}

TEST(QuantoInt4, AffineCodesScaleAndShift) {
  const float group[] = {0.0f, 15.0f, 7.5f, 1.5f};
  uint8_t q[4];
  float scale, shift;
  QuantoInt4QuantizeGroup(StoredFloat::kF16, group, 4, q, &scale, &shift);
  EXPECT_EQ(scale, 1.0f);
  EXPECT_EQ(shift, 0.0f);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 15);
  EXPECT_EQ(q[2], 8);  // 7.5 ties to even
  EXPECT_EQ(q[3], 2);  // 1.5 ties to even
}

TEST(QuantoInt4, ConstantGroupDequantizesToItsValue) {
  const float group[] = {-3.0f, -3.0f};
  uint8_t q[2];
  float scale, shift, y[2];
  QuantoInt4QuantizeGroup(StoredFloat::kBF16, group, 2, q, &scale, &shift);
  EXPECT_EQ(scale, 0.0f);
  EXPECT_EQ(shift, 3.0f);
  EXPECT_EQ(q[0], 0);
  QuantoInt4DequantizeGroup(StoredFloat::kBF16, q, 2, scale, shift, y);
  EXPECT_EQ(y[0], -3.0f);
}

TEST(QuantoInt4, PacksRowRAndRowRPlusHalfIntoOneByte) {
  const uint8_t low[] = {1, 2}, high[] = {3, 4};
  uint8_t packed[2], a[2], b[2];
  QuantoPackRowPair(low, high, 2, packed);
  EXPECT_EQ(packed[0], 0x31);
  EXPECT_EQ(packed[1], 0x42);
  QuantoPackRowPair(low, nullptr, 2, packed);
  EXPECT_EQ(packed[1], 0x02);
  QuantoPackRowPair(low, high, 2, packed);
  QuantoUnpackRowPair(packed, 2, a, b);
  EXPECT_EQ(a[1], 2);
  EXPECT_EQ(b[0], 3);
}

TEST(QuantoInt4, DefaultGroupStepsDownBy32) {
  EXPECT_EQ(QuantoDefaultGroup(4096), 128u);
  EXPECT_EQ(QuantoDefaultGroup(160), 32u);
  EXPECT_EQ(QuantoDefaultGroup(192), 96u);
  EXPECT_EQ(QuantoDefaultGroup(128), 0u);
  EXPECT_EQ(QuantoDefaultGroup(200), 0u);
}

TEST(Chatglm, Int8RowTiesToEven) {
  const float row[] = {127.0f, -63.5f, 0.5f, 1.0f};
  int8_t q[4];
  EXPECT_EQ(Fp16ToFp32(ChatglmQuantizeRow(8, row, 4, q)), 1.0f);
  EXPECT_EQ(q[0], 127);
  EXPECT_EQ(q[1], -64);
  EXPECT_EQ(q[2], 0);
  EXPECT_EQ(q[3], 1);
}

TEST(Chatglm, Int4SignedNibblesEvenColumnHigh) {
  const float row[] = {7.0f, -3.5f, 2.5f, -7.0f};
  int8_t q[2];
  EXPECT_EQ(Fp16ToFp32(ChatglmQuantizeRow(4, row, 4, q)), 1.0f);
  EXPECT_EQ(static_cast<uint8_t>(q[0]), 0x7C);  // 7 high, -4 (tie to even) low
  EXPECT_EQ(static_cast<uint8_t>(q[1]), 0x29);  // 2 high, -7 low
  float y[4];
  ChatglmDequantizeRow(4, q, 4, Fp32ToFp16(1.0f), y);
  EXPECT_EQ(y[0], 7.0f);
  EXPECT_EQ(y[1], -4.0f);
  EXPECT_EQ(y[2], 2.0f);
  EXPECT_EQ(y[3], -7.0f);
}

TEST(Chatglm, AllZeroRowAndRoundTrip) {
  const float zeros[4] = {};
  int8_t q[4] = {5, 5, 5, 5};
  EXPECT_EQ(ChatglmQuantizeRow(8, zeros, 4, q), 0);
  EXPECT_EQ(q[0], 0);
  const std::vector<float> x = RandomValues(512, 3);
  std::vector<int8_t> packed(256);
  const uint16_t scale = ChatglmQuantizeRow(4, x.data(), x.size(), packed.data());
  std::vector<float> y(x.size());
  ChatglmDequantizeRow(4, packed.data(), x.size(), scale, y.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_LE(std::fabs(x[i] - y[i]), Fp16ToFp32(scale) * 0.51f) << i;
}

}  // namespace
}  // namespace modelsmith
