#include "workers/formats/model_view.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/checkpoint_files.h"
#include "tests/support/temp_dir.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

class ModelViewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteCheckpoint(dir_.path() + "/model-00001-of-00002.safetensors",
                    {{"a", DType::kF32, {4}}, {"b", DType::kF16, {2}}});
    WriteCheckpoint(dir_.path() + "/model-00002-of-00002.safetensors", {{"c", DType::kU8, {3}}});
  }
  void WriteIndex(const std::string& json, const std::string& name = "model.safetensors.index.json") {
    std::ofstream(dir_.path() + "/" + name) << json;
  }
  absl::StatusOr<ModelView> Open(const std::string& name) {
    return OpenModel(*router_.Resolve(dir_.path() + (name.empty() ? "" : "/" + name)));
  }
  void ExpectReason(const std::string& index_json, const std::string& reason) {
    WriteIndex(index_json);
    absl::StatusOr<ModelView> view = Open("model.safetensors.index.json");
    ASSERT_FALSE(view.ok()) << "accepted " << index_json;
    EXPECT_EQ(ReasonOf(view.status()), reason) << view.status();
  }

  TempDir dir_;
  StorageRouter router_{{}};
};

constexpr char kGoodIndex[] = R"({"metadata":{"total_size":19},"weight_map":{
  "a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",
  "c":"model-00002-of-00002.safetensors"}})";

TEST_F(ModelViewTest, OpensShardedCheckpointInStateDictOrder) {
  WriteIndex(kGoodIndex);
  absl::StatusOr<ModelView> view = Open("model.safetensors.index.json");
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->format, "safetensors-sharded");
  ASSERT_EQ(view->tensors.size(), 3u);
  EXPECT_EQ(view->tensors[0].name, "a");
  EXPECT_EQ(view->tensors[2].name, "c");
  EXPECT_EQ(view->tensors[2].file_index, 1u);
  EXPECT_EQ(view->tensor_bytes, 16u + 4u + 3u);
  EXPECT_EQ(view->metadata.at("format"), "pt");
}

TEST_F(ModelViewTest, DirectoryWithOneIndexOpensIt) {
  WriteIndex(kGoodIndex);
  absl::StatusOr<ModelView> view = Open("");
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->files.size(), 2u);
}

TEST_F(ModelViewTest, VariantIndexNameIsRecognised) {
  WriteIndex(kGoodIndex, "model.safetensors.index.fp16.json");
  EXPECT_TRUE(Open("model.safetensors.index.fp16.json").ok());
}

TEST_F(ModelViewTest, SingleFileOpens) {
  absl::StatusOr<ModelView> view = Open("model-00002-of-00002.safetensors");
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->format, "safetensors");
  EXPECT_EQ(view->tensors.size(), 1u);
}

TEST_F(ModelViewTest, MissingShardIsNotFound) {
  WriteIndex(
      R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"gone.safetensors"}})");
  absl::StatusOr<ModelView> view = Open("model.safetensors.index.json");
  EXPECT_EQ(view.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ReasonOf(view.status()), "INDEX_MISSING_SHARD");
}

TEST_F(ModelViewTest, TensorMappedButAbsentFromShardIsRejected) {
  ExpectReason(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",
      "c":"model-00002-of-00002.safetensors","d":"model-00002-of-00002.safetensors"}})",
               "INDEX_MISMATCH");
}

TEST_F(ModelViewTest, TensorInShardButNotMappedIsRejected) {
  ExpectReason(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})",
               "INDEX_MISMATCH");
}

TEST_F(ModelViewTest, ShardNameEscapingDirectoryIsRejected) {
  ExpectReason(R"({"weight_map":{"a":"../model-00001-of-00002.safetensors"}})", "INDEX_INVALID_SHARD_NAME");
}

TEST_F(ModelViewTest, MalformedIndexesAreRejected) {
  ExpectReason("not json", "INDEX_INVALID_JSON");
  ExpectReason(R"({"metadata":{}})", "INDEX_INVALID");
  ExpectReason(R"({"weight_map":{"a":5}})", "INDEX_INVALID");
  ExpectReason(R"({"weight_map":{}})", "INDEX_EMPTY");
}

TEST_F(ModelViewTest, DirectoryWithTwoCheckpointsIsAmbiguous) {
  absl::StatusOr<ModelView> view = Open("");
  EXPECT_EQ(ReasonOf(view.status()), "MODEL_AMBIGUOUS");
}

TEST_F(ModelViewTest, EmptyDirectoryIsNotFound) {
  TempDir empty;
  absl::StatusOr<ModelView> view = OpenModel(*router_.Resolve(empty.path()));
  EXPECT_EQ(view.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace modelsmith
