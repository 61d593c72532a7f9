#include "workers/formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "workers/common/error.h"
#include "workers/formats/tensor_name.h"

namespace modelsmith {
namespace {

using nlohmann::json;

absl::Status Malformed(absl::string_view reason, absl::string_view file, absl::string_view tensor,
                       absl::string_view field, absl::string_view what) {
  ErrorContext context{{"file", std::string(file)}};
  std::string message = absl::StrCat("safetensors file '", file, "'");
  if (!tensor.empty()) {
    context["tensor"] = std::string(tensor);
    absl::StrAppend(&message, ", tensor '", tensor, "'");
  }
  if (!field.empty()) {
    context["field"] = std::string(field);
    absl::StrAppend(&message, ", field '", field, "'");
  }
  absl::StrAppend(&message, ": ", what);
  return MakeError(absl::StatusCode::kInvalidArgument, absl::StrCat("SAFETENSORS_", reason), message,
                   std::move(context));
}

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char lead = static_cast<unsigned char>(s[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t extra;
    uint32_t smallest;
    if ((lead & 0xE0) == 0xC0) {
      extra = 1, smallest = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      extra = 2, smallest = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      extra = 3, smallest = 0x10000;
    } else {
      return false;
    }
    if (s.size() - i <= extra) return false;
    uint32_t code_point = lead & (0x3F >> extra);
    for (size_t k = 1; k <= extra; ++k) {
      const unsigned char next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code_point = (code_point << 6) | (next & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if (code_point < smallest || code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

// Parses JSON while rejecting duplicate keys in any object: nlohmann keeps the last duplicate
// silently, and a header with two entries of one name is ambiguous (formats.md §1).
absl::StatusOr<json> ParseRejectingDuplicates(absl::string_view text, absl::string_view file) {
  std::vector<std::set<std::string>> seen;
  std::string duplicate;
  json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: seen.emplace_back(); break;
      case json::parse_event_t::object_end:
        if (!seen.empty()) seen.pop_back();
        break;
      case json::parse_event_t::key:
        if (!seen.empty() && !seen.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default: break;
    }
    return true;
  };
  json parsed = json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return Malformed("INVALID_HEADER_JSON", file, "", "", "the header is not valid JSON");
  }
  if (!duplicate.empty()) {
    return Malformed("DUPLICATE_KEY", file, duplicate, "", "the header names this key twice");
  }
  return parsed;
}

absl::StatusOr<uint64_t> NonNegativeInteger(const json& value, absl::string_view file, absl::string_view tensor,
                                            absl::string_view field, absl::string_view reason) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(value.get<int64_t>());
  }
  return Malformed(reason, file, tensor, field, absl::StrCat("expected a non-negative integer, got ", value.dump()));
}

absl::StatusOr<TensorInfo> ParseTensorEntry(const std::string& name, const json& entry, uint64_t data_start,
                                            absl::string_view file) {
  if (absl::Status s = CheckTensorNameLength(name, file); !s.ok()) return s;
  if (!entry.is_object()) {
    return Malformed("INVALID_TENSOR_ENTRY", file, name, "", "the entry is not a JSON object");
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) {
      return Malformed("INVALID_TENSOR_ENTRY", file, name, field, "the field is missing");
    }
  }
  TensorInfo info;
  info.name = name;
  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) {
    return Malformed("UNKNOWN_DTYPE", file, name, "dtype", "expected a string");
  }
  std::optional<DType> parsed_dtype = ParseDType(dtype.get<std::string>());
  if (!parsed_dtype) {
    return Malformed("UNKNOWN_DTYPE", file, name, "dtype", absl::StrCat("unknown dtype ", dtype.dump()));
  }
  info.dtype = *parsed_dtype;

  const json& shape = entry["shape"];
  if (!shape.is_array()) return Malformed("INVALID_SHAPE", file, name, "shape", "expected an array");
  for (const json& dim : shape) {
    absl::StatusOr<uint64_t> d = NonNegativeInteger(dim, file, name, "shape", "INVALID_SHAPE");
    if (!d.ok()) return d.status();
    info.shape.push_back(*d);
  }

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    return Malformed("INVALID_OFFSETS", file, name, "data_offsets", "expected an array [BEGIN, END]");
  }
  absl::StatusOr<uint64_t> begin = NonNegativeInteger(offsets[0], file, name, "data_offsets", "INVALID_OFFSETS");
  if (!begin.ok()) return begin.status();
  absl::StatusOr<uint64_t> end = NonNegativeInteger(offsets[1], file, name, "data_offsets", "INVALID_OFFSETS");
  if (!end.ok()) return end.status();
  if (*end < *begin) {
    return Malformed("INVALID_OFFSETS", file, name, "data_offsets",
                     absl::StrCat("END ", *end, " is before BEGIN ", *begin));
  }

  std::optional<uint64_t> elements = ElementCount(info.shape);
  uint64_t bits = 0;
  if (!elements || __builtin_mul_overflow(*elements, uint64_t{DTypeBits(info.dtype)}, &bits)) {
    return Malformed("SHAPE_OVERFLOW", file, name, "shape",
                     absl::StrCat("the element count of shape ", shape.dump(), " overflows"));
  }
  if (bits % 8 != 0) {
    return Malformed(
        "MISALIGNED_TENSOR", file, name, "shape",
        absl::StrCat(*elements, " elements of ", DTypeName(info.dtype), " are not a whole number of bytes"));
  }
  if (*end - *begin != bits / 8) {
    return Malformed("TENSOR_SIZE_MISMATCH", file, name, "data_offsets",
                     absl::StrCat("the range holds ", *end - *begin, " bytes but shape ", shape.dump(), " of ",
                                  DTypeName(info.dtype), " needs ", bits / 8));
  }
  if (__builtin_add_overflow(data_start, *begin, &info.data_offset)) {
    return Malformed("INVALID_OFFSETS", file, name, "data_offsets", "BEGIN overflows");
  }
  info.size_bytes = bits / 8;
  return info;
}

void AppendLittleEndian64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view text, uint64_t file_size,
                                                         absl::string_view file_name) {
  SafetensorsHeader header;
  header.header_bytes = text.size();
  header.data_start = 8 + text.size();
  if (!IsValidUtf8(text)) {
    return Malformed("INVALID_HEADER_UTF8", file_name, "", "", "the header is not valid UTF-8");
  }
  absl::StatusOr<json> parsed = ParseRejectingDuplicates(text, file_name);
  if (!parsed.ok()) return parsed.status();
  if (!parsed->is_object()) {
    return Malformed("INVALID_HEADER_JSON", file_name, "", "", "the header is not a JSON object");
  }
  for (const auto& [key, value] : parsed->items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) {
        return Malformed("INVALID_METADATA", file_name, "", "__metadata__", "expected an object of strings");
      }
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          return Malformed("INVALID_METADATA", file_name, "", absl::StrCat("__metadata__.", mkey),
                           "metadata values must be strings");
        }
        header.metadata[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    absl::StatusOr<TensorInfo> info = ParseTensorEntry(key, value, header.data_start, file_name);
    if (!info.ok()) return info.status();
    header.tensors.push_back(*std::move(info));
  }

  std::sort(header.tensors.begin(), header.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.data_offset != b.data_offset ? a.data_offset < b.data_offset : a.size_bytes < b.size_bytes;
  });
  uint64_t expected = header.data_start;
  for (const TensorInfo& t : header.tensors) {
    if (t.data_offset != expected) {
      return Malformed("INVALID_OFFSETS", file_name, t.name, "data_offsets",
                       absl::StrCat(t.data_offset > expected ? "gap" : "overlap", ": data starts at buffer offset ",
                                    t.data_offset - header.data_start, " but the previous tensor ends at ",
                                    expected - header.data_start));
    }
    expected += t.size_bytes;
  }
  if (expected != file_size) {
    return Malformed(expected < file_size ? "TRAILING_BYTES" : "TRUNCATED", file_name, "", "",
                     absl::StrCat("the tensors end at byte ", expected, " but the file has ", file_size, " bytes"));
  }
  return header;
}

absl::StatusOr<SafetensorsHeader> ReadSafetensorsHeader(const RandomAccessObject& file) {
  const std::string& name = file.uri();
  if (file.size_bytes() < 8) {
    return Malformed("HEADER_TOO_SMALL", name, "", "",
                     absl::StrCat("the file has ", file.size_bytes(), " bytes, fewer than the 8-byte length prefix"));
  }
  std::byte prefix[8];
  if (absl::Status s = file.ReadAt(0, 8, prefix); !s.ok()) return s;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(prefix[i]);
  if (n > kSafetensorsMaxHeaderBytes) {
    return Malformed(
        "HEADER_TOO_LARGE", name, "", "",
        absl::StrCat("the header length ", n, " exceeds the limit of ", kSafetensorsMaxHeaderBytes, " bytes"));
  }
  if (n > file.size_bytes() - 8) {
    return Malformed(
        "INVALID_HEADER_LENGTH", name, "", "",
        absl::StrCat("the header length ", n, " runs past the end of the file (", file.size_bytes(), " bytes)"));
  }
  std::string text(n, '\0');
  if (absl::Status s = file.ReadAt(8, n, reinterpret_cast<std::byte*>(text.data())); !s.ok()) {
    return s;
  }
  return ParseSafetensorsHeader(text, file.size_bytes(), name);
}

void SortLikeReferenceWriter(std::vector<SafetensorsEntry>& entries) {
  std::stable_sort(entries.begin(), entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    if (a.dtype != b.dtype) return a.dtype > b.dtype;
    return a.name < b.name;
  });
}

std::string SerializeSafetensorsHeader(std::span<const SafetensorsEntry> entries,
                                       const std::map<std::string, std::string>& metadata) {
  std::string body = "{";
  bool first = true;
  if (!metadata.empty()) {
    body += "\"__metadata__\":{";
    bool first_meta = true;
    for (const auto& [key, value] : metadata) {
      if (!first_meta) body += ',';
      first_meta = false;
      absl::StrAppend(&body, json(key).dump(), ":", json(value).dump());
    }
    body += '}';
    first = false;
  }
  uint64_t offset = 0;
  for (const SafetensorsEntry& entry : entries) {
    if (!first) body += ',';
    first = false;
    absl::StrAppend(&body, json(entry.name).dump(), ":{\"dtype\":\"", DTypeName(entry.dtype), "\",\"shape\":[");
    for (size_t i = 0; i < entry.shape.size(); ++i) {
      absl::StrAppend(&body, i == 0 ? "" : ",", entry.shape[i]);
    }
    absl::StrAppend(&body, "],\"data_offsets\":[", offset, ",", offset + entry.size_bytes, "]}");
    offset += entry.size_bytes;
  }
  body += '}';
  body.append((8 - body.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + body.size());
  AppendLittleEndian64(out, body.size());
  out += body;
  return out;
}

}  // namespace modelsmith
