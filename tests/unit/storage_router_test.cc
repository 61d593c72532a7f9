#include "workers/storage/storage_router.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>

#include "tests/support/temp_dir.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

TEST(StorageRouter, PathsInsideRootsResolve) {
  TempDir dir;
  StorageRouter router({dir.path() + "/root"});
  auto location = router.Resolve(dir.path() + "/root/a/../b/model.safetensors");
  ASSERT_TRUE(location.ok()) << location.status();
  EXPECT_EQ(location->uri, dir.path() + "/root/b/model.safetensors");
  EXPECT_TRUE(router.Resolve("file://" + dir.path() + "/root/x").ok());
}

TEST(StorageRouter, DotDotEscapeIsPermissionDenied) {
  TempDir dir;
  StorageRouter router({dir.path() + "/root"});
  auto location = router.Resolve(dir.path() + "/root/../outside/model.safetensors");
  EXPECT_EQ(location.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ReasonOf(location.status()), "PATH_OUTSIDE_ROOTS");
  EXPECT_EQ(router.Resolve("/etc/passwd").status().code(), absl::StatusCode::kPermissionDenied);
}

TEST(StorageRouter, RootPrefixIsNotEnough) {
  TempDir dir;
  StorageRouter router({dir.path() + "/root"});
  EXPECT_EQ(router.Resolve(dir.path() + "/root2/x").status().code(), absl::StatusCode::kPermissionDenied);
}

TEST(StorageRouter, SymlinkOutOfRootIsPermissionDenied) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() + "/root");
  std::filesystem::create_directories(dir.path() + "/secret");
  std::filesystem::create_directory_symlink(dir.path() + "/secret", dir.path() + "/root/link");
  StorageRouter router({dir.path() + "/root"});
  EXPECT_EQ(router.Resolve(dir.path() + "/root/link/file").status().code(), absl::StatusCode::kPermissionDenied);
}

TEST(StorageRouter, RelativePathsResolveAgainstWorkingDirectory) {
  TempDir dir;
  const std::string cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  StorageRouter router({"data"});
  auto location = router.Resolve("data/model.safetensors");
  std::filesystem::current_path(cwd);
  ASSERT_TRUE(location.ok()) << location.status();
  EXPECT_EQ(location->uri, dir.path() + "/data/model.safetensors");
}

TEST(StorageRouter, BadUrisAreInvalidArgument) {
  StorageRouter router({});
  EXPECT_EQ(router.Resolve("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(router.Resolve("ftp://host/x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(router.Resolve("file://host/x").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StorageRouter, S3WithoutStoreIsFailedPrecondition) {
  StorageRouter router({});
  auto location = router.Resolve("s3://bucket/prefix");
  EXPECT_EQ(location.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReasonOf(location.status()), "S3_NOT_CONFIGURED");
}

TEST(StorageRouter, S3KeysWithDotSegmentsAreInvalidArgument) {
  StorageRouter router({});
  for (const char* uri : {"s3://a/../b/key", "s3://a/x/../../b", "s3://a/./key", "s3://a//key", "s3://a/.."}) {
    EXPECT_EQ(router.Resolve(uri).status().code(), absl::StatusCode::kInvalidArgument) << uri;
  }
}

// Paths a job derives from file contents (an index's shard names, side files, external data) are
// opened through the store without passing Resolve: the store itself resolves them beneath the
// root (openat2 RESOLVE_BENEATH), so neither a planted symlink nor one swapped in later escapes.
class ConfinedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/root";
    std::filesystem::create_directories(root_ + "/sub");
    std::filesystem::create_directories(dir_.path() + "/outside");
    std::ofstream(root_ + "/a.bin") << "inside";
    std::ofstream(dir_.path() + "/outside/secret") << "secret";
    router_ = std::make_unique<StorageRouter>(std::vector<std::string>{root_});
    store_ = router_->Resolve(root_ + "/a.bin")->store;
  }
  void ExpectOutside(const absl::Status& status, const std::string& what) {
    EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << what << ": " << status;
    EXPECT_EQ(ReasonOf(status), "PATH_OUTSIDE_ROOTS") << what;
  }
  TempDir dir_;
  std::string root_;
  std::unique_ptr<StorageRouter> router_;
  ObjectStore* store_ = nullptr;
};

TEST_F(ConfinedStoreTest, SymlinkInsideTheRootIsFollowed) {
  std::filesystem::create_symlink(root_ + "/a.bin", root_ + "/sub/alias.bin");
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> file = store_->OpenForRead(root_ + "/sub/alias.bin");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->size_bytes(), 6u);
}

TEST_F(ConfinedStoreTest, SymlinkLeavingTheRootIsRefusedForReadsAndSizes) {
  std::filesystem::create_symlink(dir_.path() + "/outside/secret", root_ + "/shard.safetensors");
  std::filesystem::create_directory_symlink(dir_.path() + "/outside", root_ + "/sub/dir");
  ExpectOutside(store_->OpenForRead(root_ + "/shard.safetensors").status(), "file symlink");
  ExpectOutside(store_->SizeOf(root_ + "/shard.safetensors").status(), "size through a file symlink");
  ExpectOutside(store_->OpenForRead(root_ + "/sub/dir/secret").status(), "directory symlink");
  ExpectOutside(store_->OpenForRead(dir_.path() + "/outside/secret").status(), "a path outside every root");
}

TEST_F(ConfinedStoreTest, SymlinkSwappedInAfterTheCheckIsRefused) {
  ASSERT_TRUE(router_->Resolve(root_ + "/a.bin").ok());  // the submit-time check passes
  std::filesystem::remove(root_ + "/a.bin");
  std::filesystem::create_symlink(dir_.path() + "/outside/secret", root_ + "/a.bin");
  ExpectOutside(store_->OpenForRead(root_ + "/a.bin").status(), "swapped symlink");
}

// Writes resolve beneath the root too: an output directory that is (or becomes) a symlink out of
// the root is refused before a byte is written there; a symlink at the output's own name is
// replaced, never written through.
TEST_F(ConfinedStoreTest, WritesListsAndDeletesThroughASymlinkLeavingTheRootAreRefused) {
  std::filesystem::create_directory_symlink(dir_.path() + "/outside", root_ + "/sub/out");
  ExpectOutside(store_->OpenForWrite(root_ + "/sub/out/model.safetensors").status(), "write into a linked directory");
  ExpectOutside(store_->OpenForWrite(root_ + "/sub/out/new/deeper/m.bin").status(), "directories made through a link");
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/outside/new")) << "a directory was made outside the root";
  ExpectOutside(store_->List(root_ + "/sub/out").status(), "list a linked directory");
  ExpectOutside(store_->Delete(root_ + "/sub/out/secret"), "delete through a linked directory");
  EXPECT_TRUE(std::filesystem::exists(dir_.path() + "/outside/secret"));
  EXPECT_EQ(std::filesystem::directory_iterator(dir_.path() + "/outside")->path().filename(), "secret");
}

TEST_F(ConfinedStoreTest, ADirectorySwappedForASymlinkAfterOpeningKeepsTheWriteInside) {
  absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = store_->OpenForWrite(root_ + "/made/m.bin");
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append(std::as_bytes(std::span<const char>("data", 4))).ok());
  // The directory is moved away and a symlink out of the root takes its name before the commit.
  std::filesystem::rename(root_ + "/made", root_ + "/moved");
  std::filesystem::create_directory_symlink(dir_.path() + "/outside", root_ + "/made");
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_TRUE(std::filesystem::exists(root_ + "/moved/m.bin")) << "the commit left the directory it was opened in";
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/outside/m.bin")) << "the commit followed the swapped link";
}

TEST_F(ConfinedStoreTest, ASymlinkAtTheOutputNameIsReplacedNotWrittenThrough) {
  std::filesystem::create_symlink(dir_.path() + "/outside/secret", root_ + "/out.bin");
  absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = store_->OpenForWrite(root_ + "/out.bin");
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append(std::as_bytes(std::span<const char>("new", 3))).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_FALSE(std::filesystem::is_symlink(root_ + "/out.bin"));
  EXPECT_EQ(std::filesystem::file_size(root_ + "/out.bin"), 3u);
  std::ifstream secret(dir_.path() + "/outside/secret");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(secret), {}), "secret");
}

TEST_F(ConfinedStoreTest, WritesListsAndDeletesInsideTheRootWork) {
  absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = store_->OpenForWrite(root_ + "/a/b/c/m.bin");
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append(std::as_bytes(std::span<const char>("abc", 3))).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  absl::StatusOr<std::vector<ObjectEntry>> listed = store_->List(root_ + "/a");
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].relative_name, "b/c/m.bin");
  EXPECT_EQ((*listed)[0].uri, root_ + "/a/b/c/m.bin");
  EXPECT_EQ((*listed)[0].size_bytes, 3u);
  EXPECT_TRUE(store_->List(root_ + "/missing").ok());
  ASSERT_TRUE(store_->Delete(root_ + "/a/b/c/m.bin").ok());
  EXPECT_FALSE(std::filesystem::exists(root_ + "/a/b/c/m.bin"));
  EXPECT_TRUE(store_->Delete(root_ + "/a/b/c/m.bin").ok()) << "deleting what is gone is fine";
  EXPECT_TRUE(store_->Delete(root_ + "/nowhere/m.bin").ok());
}

TEST(StorageRouter, NoRootsAllowsAnyPath) {
  StorageRouter router({});
  EXPECT_TRUE(router.Resolve("/etc/hostname").ok());
}

}  // namespace
}  // namespace modelsmith
