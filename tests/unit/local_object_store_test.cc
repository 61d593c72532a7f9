#include "workers/storage/local_object_store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "workers/storage/checksum.h"
#include "tests/support/temp_dir.h"

namespace modelsmith {
namespace {

std::span<const std::byte> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string ReadAll(const RandomAccessObject& object) {
  std::string out(object.size_bytes(), '\0');
  EXPECT_TRUE(object.ReadAt(0, out.size(), reinterpret_cast<std::byte*>(out.data())).ok());
  return out;
}

TEST(LocalObjectStore, NothingIsVisibleBeforeCommit) {
  TempDir dir;
  LocalObjectStore store;
  const std::string uri = dir.path() + "/sub/obj.bin";
  auto writer = store.OpenForWrite(uri);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append(Bytes("hello ")).ok());
  ASSERT_TRUE((*writer)->Append(Bytes("world")).ok());
  EXPECT_TRUE(absl::IsNotFound(store.SizeOf(uri).status()));
  auto readback = (*writer)->ReadBack();
  ASSERT_TRUE(readback.ok()) << readback.status();
  EXPECT_EQ(ReadAll(**readback), "hello world");
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_EQ(*store.SizeOf(uri), 11u);
  auto object = store.OpenForRead(uri);
  ASSERT_TRUE(object.ok());
  EXPECT_EQ(ReadAll(**object), "hello world");
  auto mapped = (*object)->Mapped();
  ASSERT_TRUE(mapped.has_value());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(mapped->data()), mapped->size()), "hello world");
}

TEST(LocalObjectStore, AbortLeavesNothingBehind) {
  TempDir dir;
  LocalObjectStore store;
  {
    auto writer = store.OpenForWrite(dir.path() + "/a.bin");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(Bytes("partial")).ok());
    auto staged = store.List(dir.path());
    ASSERT_EQ(staged->size(), 1u);
    EXPECT_TRUE(store.IsStagingName((*staged)[0].relative_name));
    (*writer)->Abort();
  }
  EXPECT_TRUE(store.List(dir.path())->empty());
  {
    auto writer = store.OpenForWrite(dir.path() + "/b.bin");
    ASSERT_TRUE((*writer)->Append(Bytes("dropped")).ok());
  }  // destroyed without commit
  EXPECT_TRUE(store.List(dir.path())->empty());
}

TEST(LocalObjectStore, CommitReplacesExistingObject) {
  TempDir dir;
  LocalObjectStore store;
  const std::string uri = dir.path() + "/x";
  for (const char* text : {"first", "second!"}) {
    auto writer = store.OpenForWrite(uri);
    ASSERT_TRUE((*writer)->Append(Bytes(text)).ok());
    ASSERT_TRUE((*writer)->Commit().ok());
  }
  EXPECT_EQ(ReadAll(**store.OpenForRead(uri)), "second!");
}

TEST(LocalObjectStore, AppendFromCopiesRanges) {
  TempDir dir;
  LocalObjectStore store;
  const std::string source_uri = dir.path() + "/src";
  std::string content(3 << 20, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 7 + 3);
  {
    auto writer = store.OpenForWrite(source_uri);
    ASSERT_TRUE((*writer)->Append(Bytes(content)).ok());
    ASSERT_TRUE((*writer)->Commit().ok());
  }
  auto source = store.OpenForRead(source_uri);
  auto writer = store.OpenForWrite(dir.path() + "/dst");
  ASSERT_TRUE((*writer)->Append(Bytes("hdr")).ok());
  ASSERT_TRUE((*writer)->AppendFrom(**source, 1000, 2 << 20).ok());
  EXPECT_EQ((*writer)->bytes_written(), 3u + (2 << 20));
  EXPECT_TRUE(absl::IsOutOfRange((*writer)->AppendFrom(**source, content.size() - 1, 2)));
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_EQ(ReadAll(**store.OpenForRead(dir.path() + "/dst")), "hdr" + content.substr(1000, 2 << 20));
}

TEST(LocalObjectStore, ListIsRecursiveAndSorted) {
  TempDir dir;
  LocalObjectStore store;
  for (const char* name : {"b", "a/c", "a/b"}) {
    auto writer = store.OpenForWrite(dir.path() + "/" + name);
    ASSERT_TRUE((*writer)->Commit().ok());
  }
  auto entries = store.List(dir.path());
  ASSERT_TRUE(entries.ok());
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_EQ((*entries)[0].relative_name, "a/b");
  EXPECT_EQ((*entries)[1].relative_name, "a/c");
  EXPECT_EQ((*entries)[2].relative_name, "b");
  EXPECT_TRUE(store.List(dir.path() + "/absent")->empty());
}

TEST(LocalObjectStore, AdoptMovesACommittedObjectThatStaysInvisibleUntilCommit) {
  TempDir dir;
  LocalObjectStore store({dir.path()});
  const std::string source = dir.path() + "/staging/unet/w.bin", target = dir.path() + "/out/unet/w.bin";
  auto writer = store.OpenForWrite(source);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(Bytes("weights")).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  auto adopted = store.AdoptForWrite(source, target);
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_EQ((*adopted)->bytes_written(), 7u);
  EXPECT_TRUE(absl::IsNotFound(store.SizeOf(source).status())) << "the source is taken over";
  EXPECT_TRUE(absl::IsNotFound(store.SizeOf(target).status())) << "not visible before the commit";
  ASSERT_TRUE((*adopted)->Commit().ok());
  auto read = store.OpenForRead(target);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(ReadAll(**read), "weights");
  // An abort deletes the bytes; a source outside the roots is refused.
  writer = store.OpenForWrite(source);
  ASSERT_TRUE((*writer)->Append(Bytes("x")).ok() && (*writer)->Commit().ok());
  adopted = store.AdoptForWrite(source, dir.path() + "/out/vae/w.bin");
  ASSERT_TRUE(adopted.ok());
  (*adopted)->Abort();
  EXPECT_TRUE(absl::IsNotFound(store.SizeOf(dir.path() + "/out/vae/w.bin").status()));
  EXPECT_FALSE(store.AdoptForWrite("/etc/hostname", dir.path() + "/out/h").ok());
  // The directories the moves emptied go; those with files stay.
  store.RemoveEmptyDirectories(dir.path() + "/staging");
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/staging"));
  store.RemoveEmptyDirectories(dir.path() + "/out");
  EXPECT_TRUE(std::filesystem::exists(target));
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/out/vae"));
}

TEST(LocalObjectStore, MissingObjectsAreNotFound) {
  TempDir dir;
  LocalObjectStore store;
  EXPECT_TRUE(absl::IsNotFound(store.OpenForRead(dir.path() + "/nope").status()));
  EXPECT_TRUE(absl::IsNotFound(store.SizeOf(dir.path()).status()));  // a directory is no object
  EXPECT_TRUE(store.Delete(dir.path() + "/nope").ok());
}

TEST(LocalObjectStore, ReadPastEndIsOutOfRange) {
  TempDir dir;
  LocalObjectStore store;
  auto writer = store.OpenForWrite(dir.path() + "/f");
  ASSERT_TRUE((*writer)->Append(Bytes("abc")).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  auto object = store.OpenForRead(dir.path() + "/f");
  std::byte buffer[4];
  EXPECT_TRUE(absl::IsOutOfRange((*object)->ReadAt(1, 3, buffer)));
}

TEST(Checksum, Sha256OfKnownStrings) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace modelsmith
