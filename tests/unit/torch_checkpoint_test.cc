// The torch checkpoint reader on the fixtures torch itself wrote (tests/data/torch, made by
// make_fixtures.py there), hostile pickles and archives, and hand-built zips and pickles.
#include "workers/formats/torch_checkpoint.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "nlohmann/json.hpp"
#include "tests/support/read_file.h"
#include "tests/support/memory_object.h"
#include "workers/common/error.h"
#include "workers/formats/model_view.h"
#include "workers/formats/tensor_reader.h"
#include "workers/formats/torch_pickle.h"
#include "workers/formats/zip_archive.h"

namespace modelsmith {
namespace {

using namespace std::string_literals;

const std::string kDir = std::string(MODELSMITH_SOURCE_DIR) + "/tests/data/torch";

nlohmann::json Expected(const std::string& fixture) {
  return nlohmann::json::parse(ReadFile(kDir + "/expected.json")).at(fixture);
}

MemoryObject Fixture(const std::string& name) { return MemoryObject(ReadFile(kDir + "/" + name), name); }

std::string TensorHex(const RandomAccessObject& file, const TensorInfo& t) {
  std::string bytes(t.size_bytes, '\0');
  absl::Status s = ReadTensorBytes(file, t, 0, t.size_bytes, reinterpret_cast<std::byte*>(bytes.data()));
  EXPECT_TRUE(s.ok()) << s;
  return absl::BytesToHexString(bytes);
}

// Every tensor of `expected` (dtype, shape, bytes) and nothing else, in the given order.
void ExpectTensors(const RandomAccessObject& file, const std::vector<TensorInfo>& tensors,
                   const nlohmann::json& expected) {
  ASSERT_EQ(tensors.size(), expected.at("tensors").size() - expected.at("aliases").size());
  for (const TensorInfo& t : tensors) {
    SCOPED_TRACE(t.name);
    ASSERT_TRUE(expected.at("tensors").contains(t.name));
    const nlohmann::json& e = expected["tensors"][t.name];
    EXPECT_EQ(DTypeName(t.dtype), e.at("dtype").get<std::string>());
    EXPECT_EQ(t.shape, e.at("shape").get<std::vector<uint64_t>>());
    EXPECT_EQ(TensorHex(file, t), e.at("hex").get<std::string>());
    const auto strided = expected.at("strided").get<std::vector<std::string>>();
    EXPECT_EQ(!t.strides.empty(), std::find(strided.begin(), strided.end(), t.name) != strided.end());
  }
}

TEST(TorchCheckpointTest, ReadsEveryDtypeViewAndAliasOfATorchSaveFile) {
  MemoryObject file = Fixture("state_dict.bin");
  absl::StatusOr<TorchCheckpoint> checkpoint = ReadTorchCheckpoint(file);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const nlohmann::json expected = Expected("state_dict.bin");
  ExpectTensors(file, checkpoint->tensors, expected);
  // State-dict order is kept.
  EXPECT_EQ(checkpoint->tensors.front().name, "embed.weight");
  EXPECT_EQ(checkpoint->tensors.back().name, "tail.bias");
  ASSERT_EQ(checkpoint->aliases.size(), 1u);
  EXPECT_EQ(checkpoint->aliases[0].name, "lm_head.weight");
  EXPECT_EQ(checkpoint->aliases[0].target, "embed.weight");
  EXPECT_EQ(checkpoint->skipped, std::vector<std::string>{"config_version"});
  EXPECT_EQ(checkpoint->archive_prefix, "state_dict");
}

TEST(TorchCheckpointTest, UsesTheStateDictEntryOfALightningCheckpoint) {
  MemoryObject file = Fixture("lightning.ckpt");
  absl::StatusOr<TorchCheckpoint> checkpoint = ReadTorchCheckpoint(file);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_TRUE(checkpoint->from_state_dict_entry);
  ExpectTensors(file, checkpoint->tensors, Expected("lightning.ckpt"));
}

TEST(TorchCheckpointTest, ReadsFloat8TensorsOfRebuildTensorV3) {
  MemoryObject file = Fixture("fp8.bin");
  absl::StatusOr<TorchCheckpoint> checkpoint = ReadTorchCheckpoint(file);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ExpectTensors(file, checkpoint->tensors, Expected("fp8.bin"));
}

TEST(TorchCheckpointTest, ShardedCheckpointOpensThroughItsIndex) {
  StorageRouter router({});
  absl::StatusOr<ModelView> view = OpenModel(*router.Resolve(kDir + "/sharded/pytorch_model.bin.index.json"));
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->format, "torch-sharded");
  EXPECT_EQ(view->files.size(), 2u);
  const nlohmann::json expected = Expected("sharded");
  ASSERT_EQ(view->tensors.size(), expected["tensors"].size());
  for (const TensorInfo& t : view->tensors) {
    EXPECT_EQ(TensorHex(*view->files[t.file_index].object, t), expected["tensors"][t.name]["hex"].get<std::string>())
        << t.name;
  }
  // The directory alone opens the same model (no safetensors beside it).
  absl::StatusOr<ModelView> by_dir = OpenModel(*router.Resolve(kDir + "/sharded"));
  ASSERT_TRUE(by_dir.ok()) << by_dir.status();
  EXPECT_EQ(by_dir->format, "torch-sharded");
}

TEST(TorchCheckpointTest, SingleFileOpensAsTorchWhateverItsName) {
  StorageRouter router({});
  absl::StatusOr<ModelView> view = OpenModel(*router.Resolve(kDir + "/state_dict.bin"));
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->format, "torch");
  EXPECT_EQ(view->aliases.size(), 1u);
  EXPECT_EQ(view->skipped_entries.size(), 1u);
}

TEST(TorchCheckpointTest, LegacyFormatIsRefusedAsUnimplemented) {
  MemoryObject file = Fixture("legacy.bin");
  absl::StatusOr<TorchCheckpoint> checkpoint = ReadTorchCheckpoint(file);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ReasonOf(checkpoint.status()), "TORCH_LEGACY_FORMAT");
}

struct Hostile {
  std::string file;
  std::string reason;
  std::string names;  // the message must name this
};

// The fixture's name in test listings (ctest names each case after its parameter).
void PrintTo(const Hostile& hostile, std::ostream* os) { *os << hostile.file; }

class HostileTest : public ::testing::TestWithParam<Hostile> {};

TEST_P(HostileTest, IsRefusedNamingWhatIsWrong) {
  MemoryObject file = Fixture(GetParam().file);
  absl::StatusOr<TorchCheckpoint> checkpoint = ReadTorchCheckpoint(file);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument) << checkpoint.status();
  EXPECT_EQ(ReasonOf(checkpoint.status()), GetParam().reason) << checkpoint.status();
  EXPECT_NE(checkpoint.status().message().find(GetParam().names), std::string::npos) << checkpoint.status();
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, HostileTest,
    ::testing::Values(Hostile{"hostile_posix_system.bin", "TORCH_PICKLE_FORBIDDEN_GLOBAL", "posix.system"},
                      Hostile{"hostile_builtins_eval.bin", "TORCH_PICKLE_FORBIDDEN_GLOBAL", "builtins.eval"},
                      Hostile{"hostile_stack_global.bin", "TORCH_PICKLE_FORBIDDEN_OPCODE", "STACK_GLOBAL"},
                      Hostile{"hostile_truncated.bin", "TORCH_ZIP_NO_END_RECORD", "end-of-central-directory"},
                      Hostile{"hostile_overlap.bin", "TORCH_ZIP_OVERLAPPING_RECORDS", "data.pkl"}));

// ---- hand-built pickles ----

std::string Unicode(const std::string& s) {
  std::string out = "X";
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((s.size() >> (8 * i)) & 0xFF));
  return out + s;
}

absl::Status PickleStatus(const std::string& bytes) { return ReadTorchPickle(bytes, "test.pkl").status(); }

TEST(TorchPickleTest, RefusesEveryOpcodeOutsideTorchsSet) {
  // INST, OBJ, FRAME, MEMOIZE, SHORT_BINUNICODE, BINBYTES, POP, DUP, PERSID, EXT1.
  for (const std::string op : {"i", "o", "\x95", "\x94", "\x8c", "B", "0", "2", "P", "\x82"}) {
    absl::Status s = PickleStatus("\x80\x02}" + op + ".");
    EXPECT_EQ(ReasonOf(s), "TORCH_PICKLE_FORBIDDEN_OPCODE") << int(static_cast<uint8_t>(op[0])) << " " << s;
    EXPECT_NE(s.message().find("byte 3"), std::string::npos) << s;
  }
}

TEST(TorchPickleTest, RefusesBlockedModulesAndCallsOnNonGlobals) {
  EXPECT_EQ(ReasonOf(PickleStatus("\x80\x02"
                                  "cos\nsystem\n"
                                  ")R.")),
            "TORCH_PICKLE_FORBIDDEN_GLOBAL");
  EXPECT_EQ(ReasonOf(PickleStatus("\x80\x02"
                                  "c__builtin__\nexec\n"
                                  ")R.")),
            "TORCH_PICKLE_FORBIDDEN_GLOBAL");
  EXPECT_EQ(ReasonOf(PickleStatus("\x80\x02"
                                  "csubprocess\nPopen\n"
                                  ")R.")),
            "TORCH_PICKLE_FORBIDDEN_GLOBAL");
  // REDUCE on a string, BUILD of a plain dict, a dtype called.
  EXPECT_EQ(ReasonOf(PickleStatus("\x80\x02" + Unicode("x") + ")R.")), "TORCH_PICKLE_FORBIDDEN_CALL");
  EXPECT_EQ(ReasonOf(PickleStatus("\x80\x02}}b.")), "TORCH_PICKLE_FORBIDDEN_CALL");
  EXPECT_EQ(ReasonOf(PickleStatus("\x80\x02"
                                  "ctorch\nfloat32\n"
                                  ")R.")),
            "TORCH_PICKLE_FORBIDDEN_CALL");
}

TEST(TorchPickleTest, MalformedStreamsAreErrorsNotCrashes) {
  for (const std::string bad :
       {std::string(""), std::string("\x80\x02"), std::string("\x80\x02."), std::string("\x80\x02h\x05."),
        std::string("\x80\x02t."), std::string("\x80\x02(u."), std::string("\x80\x02]}s."),
        std::string("\x80\x02X\xff\xff\xff\xff"), "\x80\x02X\x01\x00\x00\x00\xff."s, std::string("\x80\x02}(a."),
        std::string("\x80\x02"
                    "ccollections\n"),
        std::string("\x80\x02Q."), "\x80\x02(X\x07\x00\x00\x00storagetQ."s}) {
    absl::Status s = PickleStatus(bad);
    EXPECT_FALSE(s.ok()) << absl::BytesToHexString(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
}

TEST(TorchPickleTest, SelfReferencesDoNotLoop) {
  // A list appended to itself, then a dict holding itself: refused, never walked forever.
  EXPECT_FALSE(PickleStatus("\x80\x02]q\x00h\x00a}q\x01"s + Unicode("l") + "h\x00s"s + ".").ok());
  absl::Status s = PickleStatus("\x80\x02}q\x00"s + Unicode("me") + "h\x00s."s);
  EXPECT_EQ(ReasonOf(s), "TORCH_PICKLE_MALFORMED") << s;
}

TEST(TorchPickleTest, ViewPastItsStorageIsRefused) {
  // A 2x2 float view of a 3-element FloatStorage.
  const std::string pickle = std::string("\x80\x02}(") + Unicode("w") + "ctorch._utils\n_rebuild_tensor_v2\n(" + "(" +
                             Unicode("storage") + "ctorch\nFloatStorage\n" + Unicode("0") + Unicode("cpu") + "K\x03tQ" +
                             "K\x00K\x02K\x02\x86K\x02K\x01\x86\x89"s + "ccollections\nOrderedDict\n)R" + "tRu.";
  absl::Status s = PickleStatus(pickle);
  EXPECT_EQ(ReasonOf(s), "TORCH_PICKLE_MALFORMED") << s;
  EXPECT_NE(s.message().find("storage '0'"), std::string::npos) << s;
}

// ---- hand-built zip archives ----

void Put16(std::string& s, uint16_t v) { s.push_back(char(v & 0xFF)), s.push_back(char(v >> 8)); }
void Put32(std::string& s, uint32_t v) { Put16(s, v & 0xFFFF), Put16(s, v >> 16); }
void Put64(std::string& s, uint64_t v) { Put32(s, v & 0xFFFFFFFF), Put32(s, v >> 32); }

struct Entry {
  std::string name, data;
  uint16_t method = 0;
  uint16_t flags = 0;
};

// A zip with the given records; `zip64` writes every size and offset through ZIP64 fields and
// records.
std::string BuildZip(const std::vector<Entry>& entries, bool zip64 = false, const std::string& trailer = "") {
  std::string out, central;
  for (const Entry& e : entries) {
    const uint64_t offset = out.size();
    Put32(out, 0x04034b50), Put16(out, 45), Put16(out, e.flags), Put16(out, e.method), Put32(out, 0), Put32(out, 0);
    Put32(out, zip64 ? 0xFFFFFFFF : e.data.size()), Put32(out, zip64 ? 0xFFFFFFFF : e.data.size());
    Put16(out, e.name.size()), Put16(out, zip64 ? 20 : 0);
    out += e.name;
    if (zip64) Put16(out, 1), Put16(out, 16), Put64(out, e.data.size()), Put64(out, e.data.size());
    out += e.data;
    Put32(central, 0x02014b50), Put16(central, 45), Put16(central, 45), Put16(central, e.flags),
        Put16(central, e.method);
    Put32(central, 0), Put32(central, 0);
    Put32(central, zip64 ? 0xFFFFFFFF : e.data.size()), Put32(central, zip64 ? 0xFFFFFFFF : e.data.size());
    Put16(central, e.name.size()), Put16(central, zip64 ? 28 : 0), Put16(central, 0), Put16(central, 0),
        Put16(central, 0);
    Put32(central, 0), Put32(central, zip64 ? 0xFFFFFFFF : offset);
    central += e.name;
    if (zip64)
      Put16(central, 1), Put16(central, 24), Put64(central, e.data.size()), Put64(central, e.data.size()),
          Put64(central, offset);
  }
  const uint64_t dir_offset = out.size();
  out += central;
  if (zip64) {
    const uint64_t record = out.size();
    Put32(out, 0x06064b50), Put64(out, 44), Put16(out, 45), Put16(out, 45), Put32(out, 0), Put32(out, 0);
    Put64(out, entries.size()), Put64(out, entries.size()), Put64(out, central.size()), Put64(out, dir_offset);
    Put32(out, 0x07064b50), Put32(out, 0), Put64(out, record), Put32(out, 1);
  }
  Put32(out, 0x06054b50), Put16(out, 0), Put16(out, 0);
  Put16(out, zip64 ? 0xFFFF : entries.size()), Put16(out, zip64 ? 0xFFFF : entries.size());
  Put32(out, zip64 ? 0xFFFFFFFF : central.size()), Put32(out, zip64 ? 0xFFFFFFFF : dir_offset), Put16(out, 0);
  return out + trailer;
}

absl::StatusOr<ZipArchive> Zip(const std::string& bytes) {
  MemoryObject file(bytes, "test.zip");
  return ReadZipArchive(file);
}

TEST(ZipArchiveTest, ReadsStoredRecordsPlainAndZip64) {
  for (bool zip64 : {false, true}) {
    const std::string bytes = BuildZip({{"m/data.pkl", "abc"}, {"m/data/0", "0123456789"}}, zip64);
    absl::StatusOr<ZipArchive> zip = Zip(bytes);
    ASSERT_TRUE(zip.ok()) << zip.status();
    ASSERT_EQ(zip->records.size(), 2u);
    const ZipRecord* data = zip->Find("m/data/0");
    ASSERT_NE(data, nullptr);
    EXPECT_EQ(bytes.substr(data->data_offset, data->size), "0123456789");
  }
}

TEST(ZipArchiveTest, RefusesWhatTorchNeverWrites) {
  auto reason = [](const std::string& bytes) { return ReasonOf(Zip(bytes).status()); };
  EXPECT_EQ(reason(BuildZip({{"m/a", "x", /*method=*/8}})), "TORCH_ZIP_COMPRESSED_RECORD");
  EXPECT_EQ(reason(BuildZip({{"m/a", "x", 0, /*flags=*/1}})), "TORCH_ZIP_ENCRYPTED");
  EXPECT_EQ(reason(BuildZip({{"m/a", "x"}, {"m/a", "y"}})), "TORCH_ZIP_DUPLICATE_NAME");
  EXPECT_EQ(reason(BuildZip({{"m/a", "x"}}, false, "junk")), "TORCH_ZIP_NO_END_RECORD");
  EXPECT_EQ(reason("PK\x03\x04"), "TORCH_ZIP_TRUNCATED");
  // A directory entry pointing at another record's local header.
  std::string bytes = BuildZip({{"m/a", "x"}, {"m/b", "y"}});
  const size_t second_entry = bytes.rfind("PK\x01\x02");
  bytes[second_entry + 42] = 0;  // local header offset -> 0, where m/a lives
  EXPECT_EQ(reason(bytes), "TORCH_ZIP_BAD_LOCAL_HEADER");
}

TEST(ZipArchiveTest, EveryTruncationOfARealCheckpointIsAnError) {
  const std::string whole = ReadFile(kDir + "/state_dict.bin");
  for (size_t n = 0; n < whole.size(); n += 7) {
    MemoryObject file(whole.substr(0, n), "cut.bin");
    EXPECT_FALSE(ReadTorchCheckpoint(file).ok()) << n;
  }
}

}  // namespace
}  // namespace modelsmith
