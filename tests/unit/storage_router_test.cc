#include "workers/storage/storage_router.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

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

TEST(StorageRouter, NoRootsAllowsAnyPath) {
  StorageRouter router({});
  EXPECT_TRUE(router.Resolve("/etc/hostname").ok());
}

}  // namespace
}  // namespace modelsmith
