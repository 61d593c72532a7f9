#include "workers/storage/buffer_pool.h"

#include <thread>

#include "gtest/gtest.h"

namespace modelsmith {
namespace {

TEST(BufferPool, GivesBackTheSameBufferOnceReleased) {
  BufferPool pool(4);
  std::byte* first = nullptr;
  {
    std::shared_ptr<std::byte[]> a = pool.Take(3 << 20);
    first = a.get();
    a[(3 << 20) - 1] = std::byte{7};  // the whole requested size is usable
  }
  std::shared_ptr<std::byte[]> b = pool.Take(2 << 20);
  EXPECT_EQ(b.get(), first);
}

TEST(BufferPool, BuffersInUseAreNeverHandedOutTwice) {
  BufferPool pool(4);
  std::shared_ptr<std::byte[]> a = pool.Take(1 << 20);
  std::shared_ptr<std::byte[]> b = pool.Take(1 << 20);
  EXPECT_NE(a.get(), b.get());
}

TEST(BufferPool, ASpareTooSmallIsNotUsedForALargerRequest) {
  BufferPool pool(4);
  std::byte* small = pool.Take(1 << 20).get();  // released at once
  std::shared_ptr<std::byte[]> large = pool.Take(5 << 20);
  EXPECT_NE(large.get(), small);
  std::shared_ptr<std::byte[]> again = pool.Take(1 << 20);
  EXPECT_EQ(again.get(), small);  // the small one was kept
}

TEST(BufferPool, KeepsAtMostMaxSpare) {
  BufferPool pool(1);
  std::shared_ptr<std::byte[]> a = pool.Take(1 << 20);
  std::shared_ptr<std::byte[]> b = pool.Take(1 << 20);
  std::byte* kept = a.get();
  a.reset();
  b.reset();  // the pool is full: freed
  std::shared_ptr<std::byte[]> c = pool.Take(1 << 20);
  std::shared_ptr<std::byte[]> d = pool.Take(1 << 20);
  EXPECT_EQ(c.get(), kept);
  EXPECT_NE(d.get(), kept);
}

TEST(BufferPool, ABufferMayOutliveItsPoolAndBeReleasedOnAnotherThread) {
  std::shared_ptr<std::byte[]> held;
  {
    BufferPool pool(2);
    held = pool.Take(1 << 20);
  }
  std::thread([held = std::move(held)]() mutable { held.reset(); }).join();  // under ASan: no leak, no use after free
  SUCCEED();
}

}  // namespace
}  // namespace modelsmith
