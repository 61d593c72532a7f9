#include "workers/formats/imatrix.h"

#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/formats/gguf.h"

namespace modelsmith {
namespace {

// Bounds no real importance matrix comes near; past them the file is hostile or corrupt.
constexpr int64_t kMaxEntries = 1 << 20;
constexpr int64_t kMaxNameLength = 4096;

class Cursor {
 public:
  explicit Cursor(const RandomAccessObject& file) : file_(file) {}

  uint64_t remaining() const { return file_.size_bytes() - offset_; }

  absl::Status Read(void* dst, uint64_t length, const std::string& what) {
    if (length > remaining()) {
      return Invalid(absl::StrCat(what, " needs ", length, " bytes at offset ", offset_, " but the file has ",
                                  remaining(), " left"));
    }
    if (absl::Status s = file_.ReadAt(offset_, length, static_cast<std::byte*>(dst)); !s.ok()) return s;
    offset_ += length;
    return absl::OkStatus();
  }
  absl::StatusOr<int32_t> Int32(const std::string& what) {
    int32_t value = 0;
    if (absl::Status s = Read(&value, sizeof value, what); !s.ok()) return s;
    return value;  // little-endian, as the hosts llama-imatrix runs on
  }

  absl::Status Invalid(const std::string& why) const {
    return MakeError(absl::StatusCode::kInvalidArgument, "IMATRIX_INVALID",
                     absl::StrCat("importance matrix '", file_.uri(), "': ", why), {{"file", file_.uri()}});
  }

 private:
  const RandomAccessObject& file_;
  uint64_t offset_ = 0;
};

}  // namespace

absl::StatusOr<ImportanceMatrix> ReadLegacyImatrix(const RandomAccessObject& file) {
  Cursor in(file);
  absl::StatusOr<int32_t> entries = in.Int32("the entry count");
  if (!entries.ok()) return entries.status();
  if (*entries < 1 || *entries > kMaxEntries) {
    return in.Invalid(absl::StrCat("entry count ", *entries, " is not in [1, ", kMaxEntries, "]"));
  }
  ImportanceMatrix matrix;
  for (int32_t i = 0; i < *entries; ++i) {
    const std::string entry = absl::StrCat("entry ", i);
    absl::StatusOr<int32_t> name_length = in.Int32(absl::StrCat(entry, "'s name length"));
    if (!name_length.ok()) return name_length.status();
    if (*name_length < 1 || *name_length > kMaxNameLength) {
      return in.Invalid(absl::StrCat(entry, " has a name of ", *name_length, " bytes"));
    }
    std::string name(static_cast<size_t>(*name_length), '\0');
    if (absl::Status s = in.Read(name.data(), name.size(), absl::StrCat(entry, "'s name")); !s.ok()) return s;
    const std::string named = absl::StrCat(entry, " ('", name, "')");
    absl::StatusOr<int32_t> ncall = in.Int32(absl::StrCat(named, "'s call count"));
    if (!ncall.ok()) return ncall.status();
    absl::StatusOr<int32_t> nval = in.Int32(absl::StrCat(named, "'s value count"));
    if (!nval.ok()) return nval.status();
    if (*ncall < 0 || *nval < 1) {
      return in.Invalid(absl::StrCat(named, " has ", *ncall, " calls and ", *nval, " values"));
    }
    // Checked against the file before allocating: a count cannot promise more than it holds.
    const uint64_t bytes = static_cast<uint64_t>(*nval) * sizeof(float);
    if (bytes > in.remaining()) {
      return in.Invalid(
          absl::StrCat(named, " promises ", *nval, " values; the file has ", in.remaining(), " bytes left"));
    }
    std::vector<float> values(static_cast<size_t>(*nval));
    if (absl::Status s = in.Read(values.data(), bytes, absl::StrCat(named, "'s values")); !s.ok()) return s;
    for (float& v : values) {
      if (!std::isfinite(v)) return in.Invalid(absl::StrCat(named, " holds a non-finite value"));
      if (*ncall > 0) v /= static_cast<float>(*ncall);
    }
    if (!matrix.values.emplace(name, std::move(values)).second) {
      return in.Invalid(absl::StrCat("'", name, "' appears twice"));
    }
  }
  if (in.remaining() == 0) return matrix;  // files from before the trailer was written
  absl::StatusOr<int32_t> last_call = in.Int32("the chunk count");
  if (!last_call.ok()) return last_call.status();
  matrix.chunks = *last_call;
  if (in.remaining() == 0) return matrix;
  absl::StatusOr<int32_t> dataset_length = in.Int32("the dataset name length");
  if (!dataset_length.ok()) return dataset_length.status();
  if (*dataset_length < 0 || static_cast<uint64_t>(*dataset_length) != in.remaining()) {
    return in.Invalid(absl::StrCat("the dataset name length ", *dataset_length, " does not match the ", in.remaining(),
                                   " bytes left"));
  }
  matrix.dataset.resize(static_cast<size_t>(*dataset_length));
  if (absl::Status s = in.Read(matrix.dataset.data(), matrix.dataset.size(), "the dataset name"); !s.ok()) return s;
  return matrix;
}

absl::StatusOr<ImportanceMatrix> ReadGgufImatrix(const RandomAccessObject& file) {
  const Cursor errors(file);
  absl::StatusOr<GgufFile> gguf = ReadGgufHeader(file);
  if (!gguf.ok()) return errors.Invalid(std::string(gguf.status().message()));
  ImportanceMatrix matrix;
  const GgufKv* datasets = gguf->Find("imatrix.datasets");
  const GgufKv* chunk_count = gguf->Find("imatrix.chunk_count");
  if (datasets == nullptr || chunk_count == nullptr || gguf->Find("imatrix.chunk_size") == nullptr) {
    return errors.Invalid("imatrix.datasets, imatrix.chunk_count and imatrix.chunk_size are required");
  }
  std::optional<std::vector<std::string>> names = datasets->AsStringArray();
  std::optional<uint64_t> chunks = chunk_count->AsUnsigned();
  if (!names || !chunks || *chunks > INT32_MAX) {
    return errors.Invalid("imatrix.datasets must be a string array and imatrix.chunk_count a count");
  }
  if (!names->empty()) matrix.dataset = names->front();
  matrix.chunks = static_cast<int32_t>(*chunks);
  struct Pair {
    const GgufTensor* sums = nullptr;
    const GgufTensor* counts = nullptr;
  };
  std::map<std::string, Pair> pairs;
  for (const GgufTensor& t : gguf->tensors) {
    if (absl::EndsWith(t.name, ".in_sum2")) {
      pairs[t.name.substr(0, t.name.size() - 8)].sums = &t;
    } else if (absl::EndsWith(t.name, ".counts")) {
      pairs[t.name.substr(0, t.name.size() - 7)].counts = &t;
    }
  }
  if (pairs.empty()) return errors.Invalid("it holds no in_sum2/counts tensors");
  auto read_f32 = [&](const GgufTensor& t, std::vector<float>& out) -> absl::Status {
    out.resize(t.size_bytes / sizeof(float));
    return file.ReadAt(gguf->data_start + t.offset, t.size_bytes, reinterpret_cast<std::byte*>(out.data()));
  };
  std::vector<float> sums, counts;
  for (const auto& [name, pair] : pairs) {
    if (pair.sums == nullptr || pair.counts == nullptr) {
      return errors.Invalid(
          absl::StrCat("'", name, "' has ", pair.sums == nullptr ? "counts but no in_sum2" : "in_sum2 but no counts"));
    }
    const GgufTensor& s = *pair.sums;
    const GgufTensor& c = *pair.counts;
    const uint64_t n_matrices = s.ne.size() > 1 ? s.ne[1] : 1;
    const uint64_t n_counts = c.size_bytes / sizeof(float);
    if (s.type != GgmlType::kF32 || c.type != GgmlType::kF32 || s.ne.size() > 2 || n_counts != n_matrices) {
      return errors.Invalid(absl::StrCat("'", name, "': in_sum2 and counts must be F32 of ne [n, m] and [1, m]"));
    }
    if (absl::Status st = read_f32(s, sums); !st.ok()) return st;
    if (absl::Status st = read_f32(c, counts); !st.ok()) return st;
    const uint64_t n = s.ne[0];
    std::vector<float> values(sums.size());
    for (uint64_t j = 0; j < n_matrices; ++j) {
      for (uint64_t i = 0; i < n; ++i) {
        const float v = counts[j] > 0.0f ? sums[j * n + i] / counts[j] : 1.0f;
        if (!std::isfinite(v)) return errors.Invalid(absl::StrCat("'", name, "' holds a non-finite value"));
        values[j * n + i] = v;
      }
    }
    matrix.values.emplace(name, std::move(values));
  }
  return matrix;
}

absl::StatusOr<ImportanceMatrix> ReadImatrix(const RandomAccessObject& file) {
  char magic[4] = {};
  if (file.size_bytes() >= 4) {
    if (absl::Status s = file.ReadAt(0, 4, reinterpret_cast<std::byte*>(magic)); !s.ok()) return s;
    if (std::memcmp(magic, "GGUF", 4) == 0) return ReadGgufImatrix(file);
  }
  return ReadLegacyImatrix(file);
}

}  // namespace modelsmith
