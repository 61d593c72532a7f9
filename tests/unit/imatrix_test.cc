// The legacy importance-matrix reader: the golden set's imatrix.dat (made by make_imatrix.py for
// the gguf-v2 presets model) against that model's tensors, values divided by ncall on a file
// built here, and hostile files refused with the entry at fault named.
#include "workers/formats/imatrix.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "tests/support/memory_object.h"
#include "workers/common/error.h"
#include "workers/formats/gguf.h"
#include "workers/storage/local_object_store.h"

namespace modelsmith {
namespace {

std::string Int32(int32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string Floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}
std::string Entry(const std::string& name, int32_t ncall, const std::vector<float>& values) {
  return Int32(static_cast<int32_t>(name.size())) + name + Int32(ncall) + Int32(static_cast<int32_t>(values.size())) +
         Floats(values);
}

absl::StatusOr<ImportanceMatrix> Read(const std::string& bytes) {
  MemoryObject file(bytes, "mem://imatrix.dat");
  return ReadLegacyImatrix(file);
}

TEST(LegacyImatrix, TheGoldenFileCoversEveryWeightButTheEmbeddingColumnForColumn) {
  const std::string dir = std::string(MODELSMITH_SOURCE_DIR) + "/tests/data/golden/gguf-v2/presets";
  LocalObjectStore store;
  auto file = store.OpenForRead(dir + "/imatrix.dat");
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<ImportanceMatrix> matrix = ReadLegacyImatrix(**file);
  ASSERT_TRUE(matrix.ok()) << matrix.status();
  EXPECT_EQ(matrix->dataset, "random-importance");
  auto model = store.OpenForRead(MODELSMITH_GGUF_V2_INPUT);
  ASSERT_TRUE(model.ok());
  absl::StatusOr<GgufFile> gguf = ReadGgufHeader(**model);
  ASSERT_TRUE(gguf.ok());
  size_t weights = 0;
  for (const GgufTensor& t : gguf->tensors) {
    if (t.ne.size() < 2) continue;
    if (t.name == "token_embd.weight") {
      EXPECT_FALSE(matrix->values.contains(t.name)) << "llama-imatrix never sees the embedding";
      continue;
    }
    ++weights;
    auto it = matrix->values.find(t.name);
    ASSERT_NE(it, matrix->values.end()) << t.name;
    EXPECT_EQ(it->second.size(), t.ne[0]) << t.name << ": one value per input column";
    for (float v : it->second) ASSERT_TRUE(std::isfinite(v) && v >= 0) << t.name;
  }
  EXPECT_EQ(matrix->values.size(), weights);
}

TEST(LegacyImatrix, ValuesAreSumsOverCalls) {
  const std::string bytes = Int32(2) + Entry("blk.0.attn_q.weight", 4, {4, 8, 2}) + Entry("output.weight", 0, {3, 5}) +
                            Int32(17) + Int32(4) + "wiki";
  absl::StatusOr<ImportanceMatrix> matrix = Read(bytes);
  ASSERT_TRUE(matrix.ok()) << matrix.status();
  EXPECT_EQ(matrix->values.at("blk.0.attn_q.weight"), (std::vector<float>{1, 2, 0.5f}));
  EXPECT_EQ(matrix->values.at("output.weight"), (std::vector<float>{3, 5})) << "ncall 0: values as they are";
  EXPECT_EQ(matrix->chunks, 17);
  EXPECT_EQ(matrix->dataset, "wiki");
  // The trailer is optional: files from before it was written.
  EXPECT_TRUE(Read(Int32(1) + Entry("a.weight", 1, {1})).ok());
}

TEST(LegacyImatrix, HostileFilesAreRefusedNamingWhatIsWrong) {
  const std::string good = Entry("blk.0.attn_q.weight", 1, {1, 2});
  const struct {
    std::string bytes;
    std::string says;
  } cases[] = {
      {"", "entry count"},
      {Int32(0), "entry count 0"},
      {Int32(2'000'000'000), "entry count"},
      {Int32(1) + Int32(-5), "name of -5 bytes"},
      {Int32(1) + Int32(100000), "name of 100000 bytes"},
      {Int32(1) + Int32(3) + "ab", "entry 0's name needs 3 bytes"},
      {Int32(1) + Int32(1) + "x" + Int32(1) + Int32(1'000'000'000), "promises 1000000000 values"},
      {Int32(1) + Int32(1) + "x" + Int32(-1) + Int32(1) + Floats({1}), "-1 calls"},
      {Int32(1) + Entry("x", 1, {NAN}), "non-finite"},
      {Int32(1) + Entry("x", 1, {INFINITY}), "non-finite"},
      {Int32(2) + good + good, "appears twice"},
      {Int32(2) + good, "entry 1's name length"},
      {Int32(1) + good + Int32(3) + Int32(10) + "ab", "does not match"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<ImportanceMatrix> matrix = Read(c.bytes);
    ASSERT_FALSE(matrix.ok()) << c.says;
    EXPECT_EQ(matrix.status().code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_EQ(ReasonOf(matrix.status()), "IMATRIX_INVALID") << c.says;
    EXPECT_NE(matrix.status().message().find(c.says), std::string::npos) << matrix.status();
  }
}

}  // namespace
}  // namespace modelsmith
