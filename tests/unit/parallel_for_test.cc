#include "workers/pool/parallel_for.h"

#include <atomic>
#include <stdexcept>

#include "gtest/gtest.h"

namespace modelsmith {
namespace {

TEST(ParallelFor, RunsEveryPieceOnce) {
  std::vector<std::atomic<int>> runs(1000);
  ParallelFor(runs.size(), 4, [&](size_t piece, size_t) { ++runs[piece]; });
  for (const auto& r : runs) EXPECT_EQ(r.load(), 1);
}

TEST(ParallelFor, ExceptionInHelperThreadIsRethrownOnCaller) {
  // Piece 3 throws on whichever thread takes it; without the handoff a helper thread's exception
  // would std::terminate the process.
  std::atomic<size_t> ran{0};
  try {
    ParallelFor(64, 4, [&](size_t piece, size_t) {
      ++ran;
      if (piece == 3) throw std::runtime_error("piece 3 is bad");
    });
    FAIL() << "the exception was swallowed";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "piece 3 is bad");
  }
  EXPECT_LE(ran.load(), 64u);
}

TEST(ParallelFor, ExceptionOnEveryThreadKeepsOne) {
  EXPECT_THROW(ParallelFor(8, 8, [](size_t, size_t) { throw std::logic_error("every piece fails"); }),
               std::logic_error);
}

}  // namespace
}  // namespace modelsmith
