// The GGUF reader against malformed headers, and the writer's layout read back.
#include "workers/formats/gguf.h"

#include <gtest/gtest.h>

#include "tests/support/memory_object.h"

#include <cstring>

#include "workers/common/error.h"

namespace modelsmith {
namespace {

// Builds GGUF bytes field by field, so tests can break exactly one thing.
class Bytes {
 public:
  template <typename T>
  Bytes& Put(T value) {
    s_.append(reinterpret_cast<const char*>(&value), sizeof value);
    return *this;
  }
  Bytes& Str(const std::string& text) {
    Put<uint64_t>(text.size());
    s_ += text;
    return *this;
  }
  Bytes& Pad(size_t alignment) {
    s_.append((alignment - s_.size() % alignment) % alignment, '\0');
    return *this;
  }
  Bytes& Raw(size_t n) {
    s_.append(n, '\x01');
    return *this;
  }
  std::string str() const { return s_; }

 private:
  std::string s_;
};

// A valid file: one string KV and one F32 [2, 32] tensor (ne = {32, 2}).
Bytes ValidHeader(uint32_t version = 3, uint64_t tensors = 1) {
  Bytes b;
  b.Put<uint32_t>(0x46554747).Put<uint32_t>(version).Put<uint64_t>(tensors).Put<uint64_t>(1);
  b.Str("general.architecture").Put<uint32_t>(8).Str("llama");
  return b;
}

Bytes TensorInfo(Bytes b, const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
  b.Str(name).Put<uint32_t>(ne.size());
  for (uint64_t d : ne) b.Put<uint64_t>(d);
  return b.Put<uint32_t>(type).Put<uint64_t>(offset);
}

void ExpectRejected(const std::string& bytes, const std::string& reason) {
  absl::StatusOr<GgufFile> file = ReadGgufHeader(MemoryObject(bytes, "test.gguf"));
  ASSERT_FALSE(file.ok()) << "accepted; expected " << reason;
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(file.status()), reason) << file.status();
}

TEST(GgufReader, AcceptsAValidFile) {
  std::string bytes = TensorInfo(ValidHeader(), "w", {32, 2}, 0, 0).Pad(32).Raw(256).str();
  absl::StatusOr<GgufFile> file = ReadGgufHeader(MemoryObject(bytes, "test.gguf"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors[0].Shape(), (std::vector<uint64_t>{2, 32}));
  EXPECT_EQ(file->tensors[0].size_bytes, 256u);
  EXPECT_EQ(file->data_start % 32, 0u);
  EXPECT_EQ(file->Find("general.architecture")->AsString(), "llama");
}

TEST(GgufReader, RejectsBadMagic) { ExpectRejected("GGML\3\0\0\0", "GGUF_BAD_MAGIC"); }
TEST(GgufReader, RejectsVersionOne) { ExpectRejected(ValidHeader(1).str(), "GGUF_UNSUPPORTED_VERSION"); }
TEST(GgufReader, RejectsBigEndianVersion) { ExpectRejected(ValidHeader(0x03000000).str(), "GGUF_UNSUPPORTED_VERSION"); }
TEST(GgufReader, RejectsCountsTheFileCannotHold) {
  ExpectRejected(ValidHeader(3, uint64_t{1} << 60).str(), "GGUF_INVALID_COUNT");
}
TEST(GgufReader, AStringLongerThanTheFileIsRefusedBeforeAllocating) {
  // A 48-byte file claiming a key of 1 GiB (found by the fuzzer: it used to allocate first).
  Bytes b;
  b.Put<uint32_t>(0x46554747).Put<uint32_t>(3).Put<uint64_t>(0).Put<uint64_t>(1).Put<uint64_t>(uint64_t{1} << 30);
  ExpectRejected(b.Raw(20).str(), "GGUF_TRUNCATED");
}

TEST(GgufReader, ATensorSizeThatWrapsWithItsPaddingIsRefused) {
  // F32 [2^62 - 2]: 2^64 - 8 bytes, which its 8 bytes of padding to 32 wrap to 0. The next tensor
  // then starts at offset 0 again and, being last, ends inside the file: the unchecked sums
  // accepted the file and reported "0 B of tensor data".
  Bytes b = TensorInfo(ValidHeader(3, 2), "huge", {(uint64_t{1} << 62) - 2}, 0, 0);
  b = TensorInfo(b, "small", {8}, 0, 0);
  ExpectRejected(b.Pad(32).Raw(32).str(), "GGUF_SHAPE_OVERFLOW");
}

TEST(GgufReader, ATensorWhoseEndPassesTwoToTheSixtyFourIsRefused) {
  // 32 bytes at 0, then 2^64 - 32 bytes at 32: offset + size wraps to 0, which an unchecked end
  // test would take for "inside the file".
  Bytes b = TensorInfo(ValidHeader(3, 2), "small", {8}, 0, 0);
  b = TensorInfo(b, "huge", {(uint64_t{1} << 62) - 8}, 0, 32);
  ExpectRejected(b.Pad(32).Raw(64).str(), "GGUF_SHAPE_OVERFLOW");
}

TEST(GgufReader, RejectsTruncatedHeader) { ExpectRejected(ValidHeader().str().substr(0, 40), "GGUF_TRUNCATED"); }

TEST(GgufReader, RejectsDuplicateKeys) {
  Bytes b;
  b.Put<uint32_t>(0x46554747).Put<uint32_t>(3).Put<uint64_t>(0).Put<uint64_t>(2);
  b.Str("k").Put<uint32_t>(4).Put<uint32_t>(1).Str("k").Put<uint32_t>(4).Put<uint32_t>(2);
  ExpectRejected(b.str(), "GGUF_DUPLICATE_KEY");
}

TEST(GgufReader, RejectsUnknownValueTypeAndBadBool) {
  Bytes b;
  b.Put<uint32_t>(0x46554747)
      .Put<uint32_t>(3)
      .Put<uint64_t>(0)
      .Put<uint64_t>(1)
      .Str("k")
      .Put<uint32_t>(13)
      .Put<uint32_t>(0);
  ExpectRejected(b.str(), "GGUF_INVALID_VALUE_TYPE");
  Bytes c;
  c.Put<uint32_t>(0x46554747)
      .Put<uint32_t>(3)
      .Put<uint64_t>(0)
      .Put<uint64_t>(1)
      .Str("k")
      .Put<uint32_t>(7)
      .Put<uint8_t>(2);
  ExpectRejected(c.str(), "GGUF_INVALID_BOOL");
}

TEST(GgufReader, RejectsOverlongString) {
  Bytes b;
  b.Put<uint32_t>(0x46554747).Put<uint32_t>(3).Put<uint64_t>(0).Put<uint64_t>(1).Put<uint64_t>(uint64_t{1} << 40);
  ExpectRejected(b.str(), "GGUF_STRING_TOO_LONG");
}

TEST(GgufReader, RejectsAlignmentThatIsNotAPowerOfTwo) {
  Bytes b;
  b.Put<uint32_t>(0x46554747)
      .Put<uint32_t>(3)
      .Put<uint64_t>(0)
      .Put<uint64_t>(1)
      .Str("general.alignment")
      .Put<uint32_t>(4)
      .Put<uint32_t>(24);
  ExpectRejected(b.str(), "GGUF_INVALID_ALIGNMENT");
}

TEST(GgufReader, RejectsDuplicateTensorNames) {
  Bytes b = TensorInfo(TensorInfo(ValidHeader(3, 2), "w", {32}, 0, 0), "w", {32}, 0, 128);
  ExpectRejected(b.Pad(32).Raw(256).str(), "GGUF_DUPLICATE_TENSOR");
}

TEST(GgufReader, RejectsTooManyDims) {
  ExpectRejected(TensorInfo(ValidHeader(), "w", {1, 1, 1, 1, 1}, 0, 0).str(), "GGUF_INVALID_DIMS");
}
TEST(GgufReader, RejectsUnknownType) {
  ExpectRejected(TensorInfo(ValidHeader(), "w", {32}, 4, 0).str(), "GGUF_UNSUPPORTED_TYPE");
}
TEST(GgufReader, RejectsRowNotAWholeNumberOfBlocks) {
  ExpectRejected(TensorInfo(ValidHeader(), "w", {33, 2}, 8, 0).str(), "GGUF_INVALID_DIMS");  // Q8_0 blocks are 32
}
TEST(GgufReader, RejectsOffsetsThatAreNotTheRunningPaddedSum) {
  ExpectRejected(TensorInfo(ValidHeader(), "w", {32, 2}, 0, 32).Pad(32).Raw(300).str(), "GGUF_INVALID_OFFSET");
}
TEST(GgufReader, RejectsDataPastTheEnd) {
  ExpectRejected(TensorInfo(ValidHeader(), "w", {32, 2}, 0, 0).Pad(32).Raw(100).str(), "GGUF_TRUNCATED");
}
TEST(GgufReader, RejectsOverlongTensorName) {
  ExpectRejected(TensorInfo(ValidHeader(), std::string(64, 'n'), {32}, 0, 0).str(), "GGUF_NAME_TOO_LONG");
}

TEST(GgufWriter, HeaderReadsBackWithRunningPaddedOffsets) {
  std::vector<GgufKv> kvs = {GgufKv::String("general.architecture", "llama"),
                             GgufKv::U32("general.quantization_version", kGgmlQuantizationVersion)};
  std::vector<GgufTensor> tensors = {{"a", {32, 3}, GgmlType::kQ8_0, 0, 3 * 34}, {"b", {5}, GgmlType::kF32, 0, 20}};
  std::string bytes = SerializeGgufHeader(kvs, tensors);
  ASSERT_EQ(bytes.size() % 32, 0u);
  EXPECT_EQ(tensors[1].offset, 128u);  // 102 bytes padded to 128
  bytes += std::string(102, '\1') + std::string(26, '\0') + std::string(20, '\2');
  absl::StatusOr<GgufFile> file = ReadGgufHeader(MemoryObject(bytes, "test.gguf"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->data_start, bytes.size() - 148);
  EXPECT_EQ(file->Find("general.quantization_version")->AsUnsigned(), 2u);
  EXPECT_EQ(file->tensors[0].type, GgmlType::kQ8_0);
  EXPECT_EQ(file->tensors[1].offset, 128u);
}

}  // namespace
}  // namespace modelsmith
