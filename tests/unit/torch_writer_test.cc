// The torch checkpoint writer against our reader and Python's zipfile (which checks every CRC-32):
// typed and untyped (float8) storages, 64-byte aligned data, and the ZIP64 end records that more
// than 65534 records need.
#include "workers/formats/torch_writer.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/memory_object.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "workers/formats/tensor_reader.h"
#include "workers/formats/torch_checkpoint.h"
#include "workers/formats/zip_archive.h"
#include "workers/storage/memory_writer.h"

namespace modelsmith {
namespace {

std::string Write(const std::vector<TorchTensorEntry>& tensors, const std::vector<std::string>& data) {
  std::string bytes;
  MemoryWriter out(&bytes);
  TorchZipWriter zip(out, "archive");
  const std::string pickle = TorchStateDictPickle(tensors);
  EXPECT_TRUE(zip.AddRecord("data.pkl", {reinterpret_cast<const std::byte*>(pickle.data()), pickle.size()}).ok());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_TRUE(zip.BeginRecord("data/" + std::to_string(i), data[i].size()).ok());
    // In two pieces, as a streamed copy appends them.
    const size_t half = data[i].size() / 2;
    EXPECT_TRUE(zip.AppendToRecord({reinterpret_cast<const std::byte*>(data[i].data()), half}).ok());
    EXPECT_TRUE(
        zip.AppendToRecord({reinterpret_cast<const std::byte*>(data[i].data()) + half, data[i].size() - half}).ok());
    EXPECT_TRUE(zip.EndRecord().ok());
  }
  EXPECT_TRUE(zip.AddRecord("version", {reinterpret_cast<const std::byte*>("3\n"), 2}).ok());
  EXPECT_TRUE(zip.Finish().ok());
  EXPECT_EQ(zip.bytes_written(), bytes.size());
  return bytes;
}

void ExpectZipfileAccepts(const std::string& bytes) {
  TempDir dir;
  const std::string path = dir.path() + "/model.bin";
  std::ofstream(path, std::ios::binary) << bytes;
  testing::CommandResult check = testing::RunCommand(
      {"python3", "-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); sys.exit(z.testzip() or 0)", path});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST(TorchWriter, TypedAndFloat8TensorsReadBackWithTheirBytes) {
  const std::vector<TorchTensorEntry> tensors = {{"w", DType::kF16, {2, 3}},
                                                 {"scalar", DType::kI64, {}},
                                                 {"fp8", DType::kF8E4M3, {4}},
                                                 {"u16", DType::kU16, {3}},
                                                 {"flag", DType::kBool, {1}}};
  const std::vector<std::string> data = {"abcdefghijkl", "01234567", "wxyz", "ABCDEF", std::string(1, '\1')};
  const std::string bytes = Write(tensors, data);
  MemoryObject file(bytes, "test.bin");
  absl::StatusOr<TorchCheckpoint> read = ReadTorchCheckpoint(file);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = read->tensors[i];
    EXPECT_EQ(t.name, tensors[i].name);
    EXPECT_EQ(t.dtype, tensors[i].dtype) << t.name;
    EXPECT_EQ(t.shape, tensors[i].shape) << t.name;
    EXPECT_EQ(t.data_offset % 64, 0u) << t.name;
    EXPECT_EQ(bytes.substr(t.data_offset, t.size_bytes), data[i]) << t.name;
  }
  ExpectZipfileAccepts(bytes);
}

TEST(TorchWriter, MoreRecordsThanZip32CountsUseZip64EndRecords) {
  std::vector<TorchTensorEntry> tensors;
  std::vector<std::string> data;
  for (int i = 0; i < 66'000; ++i) {
    tensors.push_back({"t" + std::to_string(i), DType::kU8, {1}});
    data.push_back(std::string(1, static_cast<char>(i)));
  }
  const std::string bytes = Write(tensors, data);
  MemoryObject file(bytes, "test.bin");
  absl::StatusOr<ZipArchive> zip = ReadZipArchive(file);
  ASSERT_TRUE(zip.ok()) << zip.status();
  EXPECT_EQ(zip->records.size(), 66'002u);
  absl::StatusOr<TorchCheckpoint> read = ReadTorchCheckpoint(file);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->tensors.size(), 66'000u);
  EXPECT_EQ(bytes.substr(read->tensors[65'999].data_offset, 1), data[65'999]);
  ExpectZipfileAccepts(bytes);
}

TEST(TorchWriter, RecordThatMissesItsPlannedSizeIsAnError) {
  std::string bytes;
  MemoryWriter out(&bytes);
  TorchZipWriter zip(out, "archive");
  ASSERT_TRUE(zip.BeginRecord("data/0", 4).ok());
  ASSERT_TRUE(zip.AppendToRecord({reinterpret_cast<const std::byte*>("ab"), 2}).ok());
  EXPECT_EQ(zip.EndRecord().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(CheckTorchWritable(DType::kF4).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace modelsmith
