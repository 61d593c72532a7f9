// S3ObjectStore against a real S3-compatible server on loopback (s3rver behind a SigV4 check).
#include "workers/storage/s3_object_store.h"

#include <gtest/gtest.h>

#include <chrono>

#include "tests/support/s3_server.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"

namespace modelsmith::testing {
namespace {

std::vector<std::byte> Pattern(size_t size, uint8_t seed) {
  std::vector<std::byte> bytes(size);
  uint32_t state = seed * 2654435761u + 1;
  for (auto& b : bytes) {
    state = state * 1664525u + 1013904223u;
    b = static_cast<std::byte>(state >> 24);
  }
  return bytes;
}

class S3StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<S3Server>(dir_.path());
    ASSERT_TRUE(server_->running());
    store_ = std::make_unique<S3ObjectStore>(server_->Config(), nullptr);
  }
  std::string Uri(const std::string& key) { return std::string("s3://") + kS3Bucket + "/" + key; }
  void Put(const std::string& key, const std::vector<std::byte>& bytes) {
    auto writer = store_->OpenForWrite(Uri(key));
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append(bytes).ok());
    ASSERT_TRUE((*writer)->Commit().ok());
  }
  std::vector<std::byte> Get(const std::string& key) {
    auto object = store_->OpenForRead(Uri(key));
    EXPECT_TRUE(object.ok()) << object.status();
    if (!object.ok()) return {};
    std::vector<std::byte> bytes((*object)->size_bytes());
    EXPECT_TRUE((*object)->ReadAt(0, bytes.size(), bytes.data()).ok());
    return bytes;
  }

  TempDir dir_;
  std::unique_ptr<S3Server> server_;
  std::unique_ptr<S3ObjectStore> store_;
};

TEST_F(S3StoreTest, PutGetRangedReadSizeDelete) {
  const std::vector<std::byte> bytes = Pattern(100'000, 1);
  Put("dir/a.bin", bytes);
  EXPECT_EQ(*store_->SizeOf(Uri("dir/a.bin")), bytes.size());
  EXPECT_EQ(Get("dir/a.bin"), bytes);
  auto object = store_->OpenForRead(Uri("dir/a.bin"));
  std::vector<std::byte> middle(1000);
  ASSERT_TRUE((*object)->ReadAt(50'000, middle.size(), middle.data()).ok());
  EXPECT_TRUE(std::equal(middle.begin(), middle.end(), bytes.begin() + 50'000));
  EXPECT_TRUE(absl::IsOutOfRange((*object)->ReadAt(99'999, 2, middle.data())));
  ASSERT_TRUE(store_->Delete(Uri("dir/a.bin")).ok());
  EXPECT_TRUE(absl::IsNotFound(store_->SizeOf(Uri("dir/a.bin")).status()));
  EXPECT_TRUE(store_->Delete(Uri("dir/a.bin")).ok());  // deleting what is gone succeeds
}

// Adoption is a server-side copy at Commit (the source deleted after), nothing visible before;
// an abort deletes the source. A key with a space, encoded in x-amz-copy-source (s3rver decodes
// the header with decodeURI, which leaves %2B and other reserved escapes encoded, so its keys here
// avoid them; S3 itself decodes them all).
TEST_F(S3StoreTest, AdoptCopiesInPlaceAtCommit) {
  const std::vector<std::byte> bytes = Pattern(3000, 5);
  Put("staging/unet/a b.bin", bytes);
  auto adopted = store_->AdoptForWrite(Uri("staging/unet/a b.bin"), Uri("out/unet/a b.bin"));
  ASSERT_TRUE(adopted.ok()) << adopted.status();
  EXPECT_EQ((*adopted)->bytes_written(), bytes.size());
  EXPECT_FALSE((*adopted)->Append(bytes).ok());
  EXPECT_TRUE(absl::IsNotFound(store_->SizeOf(Uri("out/unet/a b.bin")).status())) << "visible before Commit";
  absl::Status committed = (*adopted)->Commit();
  ASSERT_TRUE(committed.ok()) << committed;
  EXPECT_EQ(Get("out/unet/a b.bin"), bytes);
  EXPECT_TRUE(absl::IsNotFound(store_->SizeOf(Uri("staging/unet/a b.bin")).status())) << "the source is taken over";

  Put("staging/vae/w.bin", bytes);
  adopted = store_->AdoptForWrite(Uri("staging/vae/w.bin"), Uri("out/vae/w.bin"));
  ASSERT_TRUE(adopted.ok());
  (*adopted)->Abort();
  EXPECT_TRUE(absl::IsNotFound(store_->SizeOf(Uri("staging/vae/w.bin")).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->SizeOf(Uri("out/vae/w.bin")).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->AdoptForWrite(Uri("staging/none"), Uri("out/none")).status()));
}

TEST_F(S3StoreTest, KeysWithAwkwardCharactersRoundTrip) {
  for (const std::string key : {"sp ace/x", "plus+sign/y", "unicodé/z", "a=b&c/w", "tilde~(x)/v"}) {
    Put(key, Pattern(10, 2));
    EXPECT_EQ(Get(key).size(), 10u) << key;
  }
}

TEST_F(S3StoreTest, ListFollowsContinuationTokens) {
  S3Config config = server_->Config();
  config.list_page_size = 3;
  S3ObjectStore paged(config, nullptr);
  for (int i = 0; i < 7; ++i) Put("listing/obj" + std::to_string(i), Pattern(i + 1, 3));
  Put("listing-other/x", Pattern(1, 4));
  auto entries = paged.List(Uri("listing"));
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 7u);
  EXPECT_EQ((*entries)[0].relative_name, "obj0");
  EXPECT_EQ((*entries)[6].size_bytes, 7u);
  EXPECT_TRUE(paged.List(Uri("absent"))->empty());
}

TEST_F(S3StoreTest, LargeObjectGoesMultipartAndRoundTrips) {
  const std::vector<std::byte> bytes = Pattern((12 << 20) + 3, 5);  // 3 parts of 5 MiB at most
  auto writer = store_->OpenForWrite(Uri("big/object"));
  for (size_t offset = 0; offset < bytes.size(); offset += 1 << 20) {
    const size_t n = std::min<size_t>(1 << 20, bytes.size() - offset);
    ASSERT_TRUE((*writer)->Append({bytes.data() + offset, n}).ok());
  }
  EXPECT_TRUE(absl::IsNotFound(store_->SizeOf(Uri("big/object")).status())) << "visible before Commit";
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_EQ(Get("big/object"), bytes);
}

TEST_F(S3StoreTest, SyncThenCommitCompletesAnUpload) {
  const std::vector<std::byte> bytes = Pattern(7 << 20, 6);
  auto writer = store_->OpenForWrite(Uri("synced"));
  ASSERT_TRUE((*writer)->Append(bytes).ok());
  ASSERT_TRUE((*writer)->Sync().ok());
  EXPECT_TRUE(absl::IsNotFound(store_->SizeOf(Uri("synced")).status()));
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_EQ(Get("synced"), bytes);
}

TEST_F(S3StoreTest, AbortedUploadLeavesNoObject) {
  {
    auto writer = store_->OpenForWrite(Uri("aborted/object"));
    ASSERT_TRUE((*writer)->Append(Pattern(11 << 20, 7)).ok());  // two parts shipped
    (*writer)->Abort();
  }
  {
    auto writer = store_->OpenForWrite(Uri("dropped/object"));
    ASSERT_TRUE((*writer)->Append(Pattern(6 << 20, 8)).ok());
  }  // destroyed without Commit
  EXPECT_TRUE(absl::IsNotFound(store_->SizeOf(Uri("aborted/object")).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->SizeOf(Uri("dropped/object")).status()));
  EXPECT_TRUE(store_->List(Uri("aborted"))->empty());
}

TEST_F(S3StoreTest, WrongSecretFailsFastWithPermissionDenied) {
  S3Config config = server_->Config();
  config.secret_access_key = "wrong";
  S3ObjectStore store(config, nullptr);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<uint64_t> size = store.SizeOf(Uri("anything"));
  EXPECT_EQ(size.status().code(), absl::StatusCode::kPermissionDenied) << size.status();
  EXPECT_NE(size.status().message().find("s3://artifacts/anything"), absl::string_view::npos);
  auto writer = store.OpenForWrite(Uri("denied"));
  ASSERT_TRUE((*writer)->Append(Pattern(10, 9)).ok());
  absl::Status put = (*writer)->Commit();
  EXPECT_EQ(put.code(), absl::StatusCode::kPermissionDenied) << put;
  EXPECT_NE(put.message().find("SignatureDoesNotMatch"), absl::string_view::npos) << put;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2)) << "4xx must not be retried";
}

TEST_F(S3StoreTest, MissingBucketIsNotFoundNamingIt) {
  absl::StatusOr<uint64_t> size = store_->SizeOf("s3://no-such-bucket/key");
  EXPECT_TRUE(absl::IsNotFound(size.status())) << size.status();
}

TEST_F(S3StoreTest, UnreachableServerIsRetriedThenUnavailable) {
  S3Config config = server_->Config();
  config.max_attempts = 3;
  server_->Kill();
  S3ObjectStore store(config, nullptr);
  absl::StatusOr<uint64_t> size = store.SizeOf(Uri("x"));
  EXPECT_EQ(size.status().code(), absl::StatusCode::kUnavailable) << size.status();
  EXPECT_NE(size.status().message().find("3 attempts"), absl::string_view::npos) << size.status();
}

}  // namespace
}  // namespace modelsmith::testing
