// The IQ codebooks against ggml's own tables: the decoded grids built from the packed points
// hash to what ggml-common.h's iq*_grid tables hash to (SHA-256 of the tables' little-endian
// bytes, computed from ggml's source), and the search structures are deterministic.
#include "workers/quant/iq_grid.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "workers/storage/checksum.h"

namespace modelsmith {
namespace {

// The table ggml would hold for `grid`: each point's decoded values as bytes, little-endian.
std::string TableBytes(const IqGrid& grid) {
  std::string bytes;
  for (int k = 0; k < grid.size(); ++k) bytes.append(reinterpret_cast<const char*>(grid.Decoded(k)), grid.dims());
  return bytes;
}

TEST(IqGridTest, DecodedGridsAreGgmlsTables) {
  EXPECT_EQ(Sha256Hex(TableBytes(IqGrid::Get(IqGridKind::kIQ2XXS))),
            "05826b5d3e472a3a78f196be62ac78acf81df0f909626e12ab9fa2a5d490dd54");
  EXPECT_EQ(Sha256Hex(TableBytes(IqGrid::Get(IqGridKind::kIQ2XS))),
            "06e47aaca60b4dc1d9b5a3f34540437058a6b142b4d7a59d5ded769b4d1bf1de");
  EXPECT_EQ(Sha256Hex(TableBytes(IqGrid::Get(IqGridKind::kIQ2S))),
            "e1aa1473412b0552c2174c30ef22ab4073f6a181b85a17056e8249bd2932fd88");
  EXPECT_EQ(Sha256Hex(TableBytes(IqGrid::Get(IqGridKind::kIQ1S))),
            "07540ffc1aeaf6ad4d97e96b0fcc765aae39671d4ae4a27bbd0e796fde167c6a");
  EXPECT_EQ(Sha256Hex(TableBytes(IqGrid::Get(IqGridKind::kIQ3XXS))),
            "46e35f5a997efdee6c99ce57854c8a0d4f0ff8ca57e5e8a60c0793ea580acf5d");
  EXPECT_EQ(Sha256Hex(TableBytes(IqGrid::Get(IqGridKind::kIQ3S))),
            "bd1af4945a1717c65610b0284e4628b9a1ba3b306fae3a06f6e5f597356e349f");
}

TEST(IqGridTest, EveryOffGridCodeHasItsNearestPointsNearestFirst) {
  const IqGrid& grid = IqGrid::Get(IqGridKind::kIQ3XXS);
  int off_grid = 0;
  for (uint32_t code = 0; code < 4096; ++code) {
    if (grid.IndexOf(code) >= 0) continue;
    ++off_grid;
    int count = 0;
    const uint16_t* neighbours = grid.Neighbours(code, &count);
    ASSERT_GT(count, 0) << code;
    int previous = -1;
    for (int j = 0; j < count; ++j) {
      const int8_t* p = grid.Point(neighbours[j]);
      int d2 = 0;
      for (int i = 0; i < 4; ++i) {
        const int pos = 2 * ((code >> (3 * i)) & 7) + 1;
        d2 += (p[i] - pos) * (p[i] - pos);
      }
      EXPECT_GE(d2, previous) << code;
      previous = d2;
    }
  }
  EXPECT_EQ(off_grid, 4096 - 256);
}

TEST(IqGridTest, SignTablesHaveEvenParity) {
  EXPECT_EQ(EvenParitySigns(0), 0);
  EXPECT_EQ(EvenParitySigns(1), 129);
  EXPECT_EQ(EvenParitySigns(3), 3);
  EXPECT_EQ(EvenParitySigns(127), 255);
}

}  // namespace
}  // namespace modelsmith
