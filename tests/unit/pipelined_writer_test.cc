// PipelinedWriter over a real local staged file: order of mixed appends, the queue bound, an
// error of a queued append surfacing at the next call, and abort leaving nothing.
#include "workers/storage/pipelined_writer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/support/memory_object.h"
#include "tests/support/temp_dir.h"
#include "workers/storage/checksum.h"
#include "workers/storage/local_object_store.h"

namespace modelsmith {
namespace {

namespace fs = std::filesystem;

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::unique_ptr<std::byte[]> Owned(const std::string& text) {
  std::unique_ptr<std::byte[]> data(new std::byte[text.size()]);
  std::memcpy(data.get(), text.data(), text.size());
  return data;
}

TEST(PipelinedWriter, KeepsTheOrderOfOwnedCopiedAndTransferredAppends) {
  TempDir dir;
  LocalObjectStore store;
  const std::string uri = dir.path() + "/out.bin";
  MemoryObject source("0123456789", "test.bin");
  PipelinedWriter out(*store.OpenForWrite(uri), 8);
  std::string expected;
  for (int i = 0; i < 200; ++i) {
    const std::string piece = "piece" + std::to_string(i) + ";";
    ASSERT_TRUE(out.AppendOwned(Owned(piece), piece.size()).ok());
    ASSERT_TRUE(out.Append({reinterpret_cast<const std::byte*>("|"), 1}).ok());
    ASSERT_TRUE(out.AppendFrom(source, i % 10, 1).ok());
    expected += piece + "|" + std::to_string(i % 10);
  }
  EXPECT_EQ(out.bytes_written(), expected.size());
  ASSERT_TRUE(out.Commit().ok());
  EXPECT_EQ(Read(uri), expected);
}

TEST(PipelinedWriter, ReadBackDigestIsTheChecksumOfTheFile) {
  TempDir dir;
  LocalObjectStore store;
  const std::string uri = dir.path() + "/out.bin";
  MemoryObject source(std::string(3 << 20, 'z'), "test.bin");
  PipelinedWriter out(*store.OpenForWrite(uri), 1 << 20, PipelinedWriter::ReadBackCheck::kDigest);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(out.AppendOwned(Owned(std::string(100'000, 'a' + i % 26)), 100'000).ok());
  ASSERT_TRUE(out.AppendFrom(source, 17, (2 << 20) + 5).ok());
  absl::StatusOr<std::string> digest = out.ReadBackDigest();
  ASSERT_TRUE(digest.ok()) << digest.status();
  ASSERT_TRUE(out.Commit().ok());
  EXPECT_EQ(*digest, Sha256Hex(Read(uri)));

  PipelinedWriter plain(*store.OpenForWrite(dir.path() + "/plain.bin"), 1 << 20);
  EXPECT_EQ(plain.ReadBackDigest().status().code(), absl::StatusCode::kUnimplemented);
  plain.Abort();
}

TEST(PipelinedWriter, CompareModeChecksEveryByteAndHashesWhatItWasGiven) {
  TempDir dir;
  LocalObjectStore store;
  const std::string uri = dir.path() + "/out.bin";
  MemoryObject source(std::string(3 << 20, 'z'), "test.bin");
  PipelinedWriter out(*store.OpenForWrite(uri), 1 << 20, PipelinedWriter::ReadBackCheck::kCompare);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(out.AppendOwned(Owned(std::string(100'000, 'a' + i % 26)), 100'000).ok());
  ASSERT_TRUE(out.AppendFrom(source, 17, (2 << 20) + 5).ok());
  absl::StatusOr<std::string> digest = out.ReadBackDigest();
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(out.compared_bytes(), out.bytes_written());
  ASSERT_TRUE(out.Commit().ok());
  EXPECT_EQ(*digest, Sha256Hex(Read(uri)));
}

// A local writer that writes one byte wrong per append, as a failing disk or a bug would.
class CorruptingWriter final : public ObjectWriter {
 public:
  explicit CorruptingWriter(std::unique_ptr<ObjectWriter> inner) : inner_(std::move(inner)) {}
  const std::string& uri() const override { return inner_->uri(); }
  absl::Status Append(std::span<const std::byte> data) override {
    std::vector<std::byte> copy(data.begin(), data.end());
    if (!copy.empty()) copy[copy.size() / 2] ^= std::byte{1};
    return inner_->Append(copy);
  }
  uint64_t bytes_written() const override { return inner_->bytes_written(); }
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> ReadBack() override { return inner_->ReadBack(); }
  absl::Status Commit() override { return inner_->Commit(); }
  void Abort() override { inner_->Abort(); }

 private:
  std::unique_ptr<ObjectWriter> inner_;
};

TEST(PipelinedWriter, CompareModeCatchesBytesThatDifferInTheFile) {
  TempDir dir;
  LocalObjectStore store;
  PipelinedWriter out(std::make_unique<CorruptingWriter>(*store.OpenForWrite(dir.path() + "/bad.bin")), 1 << 20,
                      PipelinedWriter::ReadBackCheck::kCompare);
  absl::Status status = out.AppendOwned(Owned("hello, world"), 12);
  if (status.ok()) status = out.ReadBackDigest().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  out.Abort();
  EXPECT_FALSE(fs::exists(dir.path() + "/bad.bin"));
}

// A writer whose appends fail after `good` calls.
class FailingWriter final : public ObjectWriter {
 public:
  explicit FailingWriter(int good) : good_(good) {}
  const std::string& uri() const override { return uri_; }
  absl::Status Append(std::span<const std::byte> data) override {
    if (calls_++ >= good_) return absl::UnavailableError("disk went away");
    written_ += data.size();
    return absl::OkStatus();
  }
  uint64_t bytes_written() const override { return written_; }
  absl::Status Commit() override { return absl::OkStatus(); }
  void Abort() override { aborted_ = true; }
  static inline std::atomic<bool> aborted_{false};

 private:
  std::string uri_ = "failing";
  int good_;
  int calls_ = 0;
  uint64_t written_ = 0;
};

TEST(PipelinedWriter, AnErrorOfAQueuedAppendComesBackAndCommitFails) {
  FailingWriter::aborted_ = false;
  PipelinedWriter out(std::make_unique<FailingWriter>(3), 1 << 20);
  absl::Status status;
  for (int i = 0; i < 100 && status.ok(); ++i) status = out.AppendOwned(Owned("abc"), 3);
  if (status.ok()) status = out.Commit();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_FALSE(out.Commit().ok());
  EXPECT_TRUE(FailingWriter::aborted_);
}

TEST(PipelinedWriter, AbortLeavesNoFile) {
  TempDir dir;
  LocalObjectStore store;
  const std::string uri = dir.path() + "/out.bin";
  {
    PipelinedWriter out(*store.OpenForWrite(uri), 1 << 20);
    ASSERT_TRUE(out.AppendOwned(Owned(std::string(1 << 16, 'x')), 1 << 16).ok());
    out.Abort();
  }
  {
    PipelinedWriter dropped(*store.OpenForWrite(uri), 1 << 20);
    ASSERT_TRUE(dropped.AppendOwned(Owned("y"), 1).ok());
  }  // destroyed without commit
  EXPECT_FALSE(fs::exists(uri));
  EXPECT_TRUE(fs::is_empty(dir.path())) << "staging files were left";
}

}  // namespace
}  // namespace modelsmith
