#include "workers/formats/coreml_package.h"

#include <sys/stat.h>

#include <cstdio>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "workers/common/error.h"
#include "workers/formats/model_view.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

absl::Status PackageError(const std::string& file, absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, "COREML_PACKAGE_INVALID",
                   absl::StrCat("Core ML package file '", file, "': ", message), {{"file", file}});
}

absl::Status Unsupported(const std::string& uri, absl::string_view message) {
  return MakeError(absl::StatusCode::kInvalidArgument, "UNSUPPORTED_FORMAT", absl::StrCat("'", uri, "' ", message),
                   {{"file", uri}});
}

// A package-relative path that stays inside: not empty, not absolute, no "." or ".." parts.
bool IsContainedPath(absl::string_view path) {
  if (path.empty() || path.front() == '/') return false;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

// Local packages: no component below the package root may be a symlink (one could point
// anywhere). Object stores have no symlinks.
absl::Status CheckNoSymlinks(const std::string& root, absl::string_view relative) {
  if (absl::StartsWith(root, "s3://")) return absl::OkStatus();
  std::string path = root;
  for (absl::string_view part : absl::StrSplit(relative, '/')) {
    path = JoinUri(path, part);
    struct stat st;
    if (lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
      return PackageError(path, "is a symbolic link; a package's files must lie inside it");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWhole(ObjectStore& store, const std::string& uri, uint64_t limit) {
  absl::StatusOr<std::optional<std::string>> bytes = ReadSmallObject(store, uri, limit, "COREML_PACKAGE_INVALID");
  if (!bytes.ok()) return bytes.status();
  if (!*bytes) return PackageError(uri, "is missing");
  return **std::move(bytes);
}

// "major.minor.patch", each a number, no later than 1.0.0.
bool SupportedVersion(const std::string& version) {
  std::vector<std::string> parts = absl::StrSplit(version, '.');
  int numbers[3];
  if (parts.size() != 3) return false;
  for (int i = 0; i < 3; ++i) {
    if (parts[i].empty() || !absl::SimpleAtoi(parts[i], &numbers[i]) || numbers[i] < 0) return false;
  }
  return numbers[0] < 1 || (numbers[0] == 1 && numbers[1] == 0 && numbers[2] == 0);
}

// The root model's package-relative path, from the validated manifest.
absl::StatusOr<std::string> RootModelPath(ObjectStore& store, const std::string& uri) {
  const std::string manifest_uri = JoinUri(uri, "Manifest.json");
  if (absl::Status s = CheckNoSymlinks(uri, "Manifest.json"); !s.ok()) return s;
  absl::StatusOr<std::string> text = ReadWhole(store, manifest_uri, kCoreMlMaxManifestBytes);
  if (!text.ok()) return text.status();
  const nlohmann::json manifest = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object()) return PackageError(manifest_uri, "is not a JSON object");
  auto version = manifest.find("fileFormatVersion");
  if (version == manifest.end() || !version->is_string() || !SupportedVersion(version->get<std::string>()))
    return PackageError(manifest_uri, "fileFormatVersion must be a version \"major.minor.patch\" no later than 1.0.0");
  auto entries = manifest.find("itemInfoEntries");
  if (entries == manifest.end() || !entries->is_object())
    return PackageError(manifest_uri, "itemInfoEntries must be an object");
  std::string root_path;
  auto root = manifest.find("rootModelIdentifier");
  if (root == manifest.end() || !root->is_string()) return PackageError(manifest_uri, "rootModelIdentifier is missing");
  for (const auto& [identifier, entry] : entries->items()) {
    for (const char* key : {"path", "name", "author", "description"}) {
      if (!entry.is_object() || !entry.contains(key) || !entry[key].is_string())
        return PackageError(manifest_uri, absl::StrCat("entry '", identifier, "' has no string '", key, "'"));
    }
    const std::string path = entry["path"].get<std::string>();
    if (!IsContainedPath(path))
      return PackageError(manifest_uri, absl::StrCat("entry '", identifier, "' has path '", path,
                                                     "', which is not a plain path inside the package"));
    const std::string relative = absl::StrCat("Data/", path);
    if (absl::Status s = CheckNoSymlinks(uri, relative); !s.ok()) return s;
    if (identifier == root->get<std::string>()) root_path = relative;
  }
  if (root_path.empty())
    return PackageError(manifest_uri, absl::StrCat("rootModelIdentifier '", root->get<std::string>(),
                                                   "' names no entry of itemInfoEntries"));
  return root_path;
}

}  // namespace

bool IsCoreMlInput(absl::string_view uri) {
  while (absl::EndsWith(uri, "/")) uri.remove_suffix(1);
  return absl::EndsWith(uri, ".mlpackage") || absl::EndsWith(uri, ".mlmodelc");
}

absl::StatusOr<CoreMlPackage> CoreMlPackage::Open(ObjectStore& store, const std::string& uri) {
  CoreMlPackage package;
  package.store_ = &store;
  package.uri_ = uri;
  while (package.uri_.size() > 1 && package.uri_.back() == '/') package.uri_.pop_back();
  if (absl::EndsWith(package.uri_, ".mlmodelc"))
    return Unsupported(package.uri_,
                       "is a compiled Core ML model (.mlmodelc); give the .mlpackage it was compiled from");
  absl::StatusOr<std::string> root_path = RootModelPath(store, package.uri_);
  if (!root_path.ok()) return root_path.status();
  package.model_uri_ = JoinUri(package.uri_, *root_path);
  absl::StatusOr<std::string> bytes = ReadWhole(store, package.model_uri_, kCoreMlMaxModelBytes);
  if (!bytes.ok()) return bytes.status();
  package.model_bytes_ = bytes->size();
  if (!package.model_.ParseFromString(*bytes)) {
    return MakeError(absl::StatusCode::kInvalidArgument, "COREML_MODEL_INVALID",
                     absl::StrCat("'", package.model_uri_, "' is not a Core ML model protobuf (truncated or corrupt)"),
                     {{"file", package.model_uri_}});
  }
  const coreml::Model& model = package.model_;
  if (model.type_case() == coreml::Model::kNeuralNetwork)
    return Unsupported(package.model_uri_, "is a neural-network model; only ML Programs (mlprogram) are read");
  if (model.type_case() == coreml::Model::kPipeline)
    return Unsupported(package.model_uri_, "is a pipeline of models; bisect or inspect its parts");
  if (model.type_case() != coreml::Model::kMlProgram)
    return Unsupported(package.model_uri_, "is not an ML Program (only mlprogram models are read)");
  if (model.specification_version() < 6 || model.specification_version() > 9)
    return Unsupported(package.model_uri_, absl::StrCat("has specification version ", model.specification_version(),
                                                        "; ML Programs of versions 6 (iOS15) to 9 (iOS18) are read"));
  return package;
}

absl::StatusOr<const CoreMlWeightFile*> CoreMlPackage::WeightFile(const std::string& file_name, absl::string_view who) {
  // coremltools takes the last path part, relative to the root model's weights directory.
  const std::string base(BaseName(file_name));
  if (base.empty() || base == "." || base == "..")
    return PackageError(model_uri_,
                        absl::StrCat(who, " names weight file '", file_name, "', which is not a file name"));
  auto found = weight_files_.find(base);
  if (found != weight_files_.end()) return found->second.get();
  const std::string model_dir(ParentUri(model_uri_));
  const std::string relative = absl::StrCat(model_dir.substr(uri_.size() + 1), "/weights/", base);
  if (absl::Status s = CheckNoSymlinks(uri_, relative); !s.ok()) return s;
  const std::string file_uri = JoinUri(uri_, relative);
  absl::StatusOr<std::unique_ptr<RandomAccessObject>> object = store_->OpenForRead(file_uri);
  if (!object.ok()) {
    if (absl::IsNotFound(object.status()))
      return PackageError(file_uri, absl::StrCat("is missing (", who, " refers to it)"));
    return object.status();
  }
  absl::StatusOr<MilBlobFile> blobs = MilBlobFile::Open(**object, file_uri);
  if (!blobs.ok()) return blobs.status();
  auto file = std::make_unique<CoreMlWeightFile>(CoreMlWeightFile{*std::move(object), *std::move(blobs)});
  return weight_files_.emplace(base, std::move(file)).first->second.get();
}

std::string CoreMlManifestJson(const std::string& model_digest, const std::string& weights_digest) {
  // An identifier in the UUID form coremltools writes, upper-case hex, from a digest.
  auto identifier = [](const std::string& hex) {
    std::string id;
    for (size_t i = 0; i < 32; ++i) {
      if (i == 8 || i == 12 || i == 16 || i == 20) id += '-';
      id += static_cast<char>(std::toupper(static_cast<unsigned char>(hex[i])));
    }
    return id;
  };
  const std::string model_id = identifier(model_digest), weights_id = identifier(weights_digest);
  nlohmann::ordered_json manifest;
  manifest["fileFormatVersion"] = "1.0.0";
  nlohmann::ordered_json entries;
  nlohmann::ordered_json model = {{"author", "com.apple.CoreML"},
                                  {"description", "CoreML Model Specification"},
                                  {"name", "model.mlmodel"},
                                  {"path", "com.apple.CoreML/model.mlmodel"}};
  nlohmann::ordered_json weights = {{"author", "com.apple.CoreML"},
                                    {"description", "CoreML Model Weights"},
                                    {"name", "weights"},
                                    {"path", "com.apple.CoreML/weights"}};
  // Keys in sorted order, as coremltools' writer (a std::map) emits them.
  if (weights_id < model_id) {
    entries[weights_id] = weights;
    entries[model_id] = model;
  } else {
    entries[model_id] = model;
    entries[weights_id] = weights;
  }
  manifest["itemInfoEntries"] = entries;
  manifest["rootModelIdentifier"] = model_id;
  return manifest.dump(4) + "\n";
}

}  // namespace modelsmith
