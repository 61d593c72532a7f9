// The safetensors reader against malformed headers (each with its expected reason) and the
// writer against the reference serializer's layout.
#include "workers/formats/safetensors.h"

#include <gtest/gtest.h>

#include "tests/support/memory_object.h"

#include <cstring>

#include "workers/common/error.h"

namespace modelsmith {
namespace {

// A whole file: length prefix + header + `data_bytes` zero bytes.
std::string FileWith(const std::string& header, uint64_t data_bytes) {
  std::string file(8, '\0');
  uint64_t n = header.size();
  std::memcpy(file.data(), &n, 8);
  return file + header + std::string(data_bytes, '\0');
}

absl::StatusOr<SafetensorsHeader> Read(const std::string& file) {
  return ReadSafetensorsHeader(MemoryObject(file, "test.safetensors"));
}

// Reads `file`, expects INVALID_ARGUMENT with `reason` and the file named in the message.
void ExpectRejected(const std::string& file, const std::string& reason) {
  absl::StatusOr<SafetensorsHeader> header = Read(file);
  ASSERT_FALSE(header.ok()) << "accepted a file that should fail with " << reason;
  EXPECT_EQ(header.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReasonOf(header.status()), reason) << header.status();
  EXPECT_NE(header.status().message().find("test.safetensors"), absl::string_view::npos) << header.status();
}

constexpr char kGood[] =
    R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]}})";

TEST(SafetensorsReader, ParsesValidFileSortedByOffset) {
  absl::StatusOr<SafetensorsHeader> header = Read(FileWith(kGood, 22));
  ASSERT_TRUE(header.ok()) << header.status();
  ASSERT_EQ(header->tensors.size(), 2u);
  EXPECT_EQ(header->tensors[0].name, "a");
  EXPECT_EQ(header->tensors[0].data_offset, 8 + std::strlen(kGood));
  EXPECT_EQ(header->tensors[1].name, "b");
  EXPECT_EQ(header->tensors[1].dtype, DType::kF16);
  EXPECT_EQ(header->tensors[1].shape, std::vector<uint64_t>{3});
  EXPECT_EQ(header->tensors[1].size_bytes, 6u);
}

TEST(SafetensorsReader, AcceptsLeadingAndTrailingWhitespace) {
  EXPECT_TRUE(Read(FileWith(std::string("  \n") + kGood + "    ", 22)).ok());
}

TEST(SafetensorsReader, AcceptsEmptyAndScalarTensorsAndMetadata) {
  absl::StatusOr<SafetensorsHeader> header = Read(FileWith(
      R"({"__metadata__":{"format":"pt"},"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]}})",
      8));
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->metadata.at("format"), "pt");
  EXPECT_EQ(header->tensors.size(), 2u);
}

TEST(SafetensorsReader, RejectsFileShorterThanPrefix) { ExpectRejected("abc", "SAFETENSORS_HEADER_TOO_SMALL"); }

TEST(SafetensorsReader, RejectsHeaderOverLimit) {
  std::string file(16, '\0');
  uint64_t n = kSafetensorsMaxHeaderBytes + 1;
  std::memcpy(file.data(), &n, 8);
  ExpectRejected(file, "SAFETENSORS_HEADER_TOO_LARGE");
}

TEST(SafetensorsReader, RejectsHeaderPastEndOfFile) {
  std::string file = FileWith("{}", 0);
  file.resize(9);
  ExpectRejected(file, "SAFETENSORS_INVALID_HEADER_LENGTH");
}

TEST(SafetensorsReader, RejectsInvalidUtf8) {
  ExpectRejected(FileWith("{\"\xff\":1}", 0), "SAFETENSORS_INVALID_HEADER_UTF8");
}

TEST(SafetensorsReader, RejectsNonJson) { ExpectRejected(FileWith("{not json", 0), "SAFETENSORS_INVALID_HEADER_JSON"); }

TEST(SafetensorsReader, RejectsJsonThatIsNotAnObject) {
  ExpectRejected(FileWith("[1,2]", 0), "SAFETENSORS_INVALID_HEADER_JSON");
}

TEST(SafetensorsReader, RejectsDuplicateTensorNames) {
  ExpectRejected(
      FileWith(
          R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
          2),
      "SAFETENSORS_DUPLICATE_KEY");
}

TEST(SafetensorsReader, RejectsMissingField) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"U8","shape":[1]}})", 1), "SAFETENSORS_INVALID_TENSOR_ENTRY");
}

TEST(SafetensorsReader, RejectsEntryThatIsNotAnObject) {
  ExpectRejected(FileWith(R"({"a":[1,2,3]})", 0), "SAFETENSORS_INVALID_TENSOR_ENTRY");
}

TEST(SafetensorsReader, RejectsUnknownDtype) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}})", 16),
                 "SAFETENSORS_UNKNOWN_DTYPE");
}

TEST(SafetensorsReader, RejectsLowercaseDtype) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4), "SAFETENSORS_UNKNOWN_DTYPE");
}

TEST(SafetensorsReader, RejectsNegativeDimension) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1), "SAFETENSORS_INVALID_SHAPE");
}

TEST(SafetensorsReader, RejectsFractionalDimension) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}})", 1),
                 "SAFETENSORS_INVALID_SHAPE");
}

TEST(SafetensorsReader, RejectsShapeWhoseElementCountOverflows) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4),
                 "SAFETENSORS_SHAPE_OVERFLOW");
}

TEST(SafetensorsReader, RejectsBitCountOverflow) {
  // 2^62 elements of F32: the element count fits, the bit count does not.
  ExpectRejected(FileWith(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})", 4),
                 "SAFETENSORS_SHAPE_OVERFLOW");
}

TEST(SafetensorsReader, RejectsSizeNotMatchingShape) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4),
                 "SAFETENSORS_TENSOR_SIZE_MISMATCH");
}

TEST(SafetensorsReader, RejectsEndBeforeBegin) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4),
                 "SAFETENSORS_INVALID_OFFSETS");
}

TEST(SafetensorsReader, RejectsOffsetsOfWrongArity) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1), "SAFETENSORS_INVALID_OFFSETS");
}

TEST(SafetensorsReader, RejectsGapBetweenTensors) {
  ExpectRejected(
      FileWith(
          R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}})",
          3),
      "SAFETENSORS_INVALID_OFFSETS");
}

TEST(SafetensorsReader, RejectsDataNotStartingAtZero) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", 2),
                 "SAFETENSORS_INVALID_OFFSETS");
}

TEST(SafetensorsReader, RejectsOverlappingTensors) {
  ExpectRejected(
      FileWith(
          R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
          3),
      "SAFETENSORS_INVALID_OFFSETS");
}

TEST(SafetensorsReader, RejectsTrailingBytes) { ExpectRejected(FileWith(kGood, 23), "SAFETENSORS_TRAILING_BYTES"); }

TEST(SafetensorsReader, RejectsTruncatedData) { ExpectRejected(FileWith(kGood, 21), "SAFETENSORS_TRUNCATED"); }

TEST(SafetensorsReader, RejectsNonStringMetadataValue) {
  ExpectRejected(FileWith(R"({"__metadata__":{"step":1}})", 0), "SAFETENSORS_INVALID_METADATA");
}

TEST(SafetensorsReader, RejectsMetadataThatIsNotAnObject) {
  ExpectRejected(FileWith(R"({"__metadata__":"pt"})", 0), "SAFETENSORS_INVALID_METADATA");
}

TEST(SafetensorsReader, RejectsSubByteTensorThatIsNotWholeBytes) {
  ExpectRejected(FileWith(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2),
                 "SAFETENSORS_MISALIGNED_TENSOR");
}

TEST(SafetensorsReader, ErrorNamesTensorAndField) {
  absl::StatusOr<SafetensorsHeader> header =
      Read(FileWith(R"({"weird.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4));
  ASSERT_FALSE(header.ok());
  ErrorContext context = ContextOf(header.status());
  EXPECT_EQ(context["tensor"], "weird.weight");
  EXPECT_EQ(context["field"], "data_offsets");
  EXPECT_EQ(context["file"], "test.safetensors");
}

TEST(SafetensorsWriter, MatchesReferenceLayoutForSmallFile) {
  // What safetensors' serialize() writes for {"b": F16[3], "a": F32[2,2]} with metadata
  // {"format":"pt"}: metadata first, F32 before F16 (larger dtype first), compact JSON padded
  // with spaces to a multiple of 8.
  std::vector<SafetensorsEntry> entries = {{"b", DType::kF16, {3}, 6}, {"a", DType::kF32, {2, 2}, 16}};
  SortLikeReferenceWriter(entries);
  ASSERT_EQ(entries[0].name, "a");
  const std::string bytes = SerializeSafetensorsHeader(entries, {{"format", "pt"}});
  const std::string json =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]}})";
  const std::string padded = json + std::string((8 - json.size() % 8) % 8, ' ');
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n, padded.size());
  EXPECT_EQ(bytes.substr(8), padded);
  EXPECT_EQ(bytes.size() % 8, 0u);
}

TEST(SafetensorsWriter, EmptyFileIsBracesPlusSixSpaces) {
  const std::string bytes = SerializeSafetensorsHeader({}, {});
  EXPECT_EQ(bytes.substr(8), "{}      ");
}

TEST(SafetensorsWriter, OutputReadsBack) {
  std::vector<SafetensorsEntry> entries = {{"x", DType::kBF16, {4, 2}, 16}, {"y", DType::kI64, {}, 8}};
  SortLikeReferenceWriter(entries);
  std::string file = SerializeSafetensorsHeader(entries, {{"format", "pt"}}) + std::string(24, '\1');
  absl::StatusOr<SafetensorsHeader> header = Read(file);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->tensors[0].name, "y");  // I64 sorts before BF16
  EXPECT_EQ(header->tensors[1].name, "x");
}

TEST(SafetensorsWriter, EscapesNamesAsJson) {
  std::vector<SafetensorsEntry> entries = {{"q\"uote\\", DType::kU8, {1}, 1}};
  std::string file = SerializeSafetensorsHeader(entries, {}) + std::string(1, '\0');
  absl::StatusOr<SafetensorsHeader> header = Read(file);
  ASSERT_TRUE(header.ok()) << header.status();
  EXPECT_EQ(header->tensors[0].name, "q\"uote\\");
}

}  // namespace
}  // namespace modelsmith
