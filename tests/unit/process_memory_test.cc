#include "workers/pool/process_memory.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/temp_dir.h"

namespace modelsmith {
namespace {

TEST(CgroupMemoryLimit, ReadsCgroupV2Limit) {
  TempDir dir;
  std::ofstream(dir.path() + "/memory.max") << "8589934592\n";
  EXPECT_EQ(CgroupMemoryLimitBytes(dir.path()), 8589934592u < PhysicalMemoryBytes() ? 8589934592u : 0u);
  std::ofstream(dir.path() + "/memory.max") << "1073741824\n";
  EXPECT_EQ(CgroupMemoryLimitBytes(dir.path()), 1073741824u);
}

TEST(CgroupMemoryLimit, MaxMeansNoLimit) {
  TempDir dir;
  std::ofstream(dir.path() + "/memory.max") << "max\n";
  EXPECT_EQ(CgroupMemoryLimitBytes(dir.path()), 0u);
}

TEST(CgroupMemoryLimit, ReadsCgroupV1LimitAndIgnoresItsHugeNoLimit) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() + "/memory");
  std::ofstream(dir.path() + "/memory/memory.limit_in_bytes") << "536870912\n";
  EXPECT_EQ(CgroupMemoryLimitBytes(dir.path()), 536870912u);
  std::ofstream(dir.path() + "/memory/memory.limit_in_bytes") << "9223372036854771712\n";
  EXPECT_EQ(CgroupMemoryLimitBytes(dir.path()), 0u);
}

TEST(CgroupMemoryLimit, NoCgroupFilesMeansNoLimit) {
  TempDir dir;
  EXPECT_EQ(CgroupMemoryLimitBytes(dir.path()), 0u);
}

TEST(ProcessMemory, ReportsResidentAndPeak) {
  EXPECT_GT(CurrentResidentBytes(), 0u);
  EXPECT_GE(PeakResidentBytes(), CurrentResidentBytes());
  EXPECT_GT(DefaultMemoryBudgetBytes(), 0u);
}

}  // namespace
}  // namespace modelsmith
