#include "workers/jobs/core/size_string.h"

#include <gtest/gtest.h>

#include "workers/common/error.h"

namespace modelsmith {
namespace {

uint64_t Parse(const char* text) {
  absl::StatusOr<uint64_t> bytes = ParseSize(text);
  EXPECT_TRUE(bytes.ok()) << text << ": " << bytes.status();
  return bytes.value_or(~0ull);
}

TEST(ParseSize, DecimalUnitsArePowersOfTen) {
  EXPECT_EQ(Parse("5GB"), 5'000'000'000ull);
  EXPECT_EQ(Parse("500MB"), 500'000'000ull);
  EXPECT_EQ(Parse("3KB"), 3'000ull);
  EXPECT_EQ(Parse("2TB"), 2'000'000'000'000ull);
  EXPECT_EQ(Parse("7B"), 7ull);
}

TEST(ParseSize, BinaryUnitsArePowersOfTwo) {
  EXPECT_EQ(Parse("5GiB"), 5ull << 30);
  EXPECT_EQ(Parse("1MiB"), 1ull << 20);
  EXPECT_EQ(Parse("1KiB"), 1024ull);
  EXPECT_EQ(Parse("1TiB"), 1ull << 40);
}

TEST(ParseSize, PlainByteCount) { EXPECT_EQ(Parse("1048576"), 1048576ull); }

TEST(ParseSize, FractionsTruncateLikeHuggingFace) {
  EXPECT_EQ(Parse("2.5GB"), 2'500'000'000ull);
  EXPECT_EQ(Parse("1.5KiB"), 1536ull);
  EXPECT_EQ(Parse("0.0001KB"), 0ull);
}

TEST(ParseSize, ZeroAndNoneMeanNoLimit) {
  EXPECT_EQ(Parse("0"), 0ull);
  EXPECT_EQ(Parse("none"), 0ull);
}

TEST(ParseSize, OneSpaceBeforeUnitIsAllowed) { EXPECT_EQ(Parse("10 GB"), 10'000'000'000ull); }

TEST(ParseSize, RejectsAmbiguousAndMalformedInput) {
  for (const char* bad : {"", "GB", "5gb", "5Gb", "5 G", "5XB", "-5GB", "5..0GB", "5.GB", "1.5", "5GBs",
                          "99999999999999999999", "20000000TiB", "5  GB", "1e9"}) {
    absl::StatusOr<uint64_t> bytes = ParseSize(bad);
    EXPECT_FALSE(bytes.ok()) << "accepted '" << bad << "'";
    if (!bytes.ok()) {
      EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(ReasonOf(bytes.status()), "INVALID_SIZE");
    }
  }
}

}  // namespace
}  // namespace modelsmith
