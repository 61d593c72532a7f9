// A Core ML model package (an ".mlpackage" directory) read without coremltools
// (shared/reference/coreml.md sections 1-3):
//   Manifest.json  validated as coremltools' ModelPackage::validate does: a fileFormatVersion
//                  "major.minor.patch" no later than 1.0.0, itemInfoEntries each with string path,
//                  name, author and description, a rootModelIdentifier among them, and every
//                  entry's Data/<path> present. A path that is absolute, climbs ("..") or passes a
//                  symlink is refused: the package must stay inside itself.
//   the root model an ML Program (mlProgram, field 502) of specification version 6 to 9.
//   weight files   "weights/<name>" beside the root model, opened on first reference and checked
//                  whole (MilBlobFile).
// Errors: INVALID_ARGUMENT COREML_PACKAGE_INVALID (the manifest, a path, a missing file),
// COREML_MODEL_INVALID (the model protobuf), MIL_BLOB_INVALID (a weight file); UNSUPPORTED_FORMAT
// for a compiled ".mlmodelc", a neural-network or pipeline model, or a specification version
// outside 6..9. Each names the file at fault.
#ifndef MODELSMITH_WORKERS_FORMATS_COREML_PACKAGE_H_
#define MODELSMITH_WORKERS_FORMATS_COREML_PACKAGE_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coreml/mlmodel.pb.h"
#include "workers/formats/mil_blob.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

inline constexpr uint64_t kCoreMlMaxManifestBytes = 1 << 20;
inline constexpr uint64_t kCoreMlMaxModelBytes = (uint64_t{2} << 30) - 1;  // protobuf's limit

// True when `uri` names a Core ML package or a compiled model (by its extension).
bool IsCoreMlInput(absl::string_view uri);

struct CoreMlWeightFile {
  std::unique_ptr<RandomAccessObject> object;
  MilBlobFile blobs;
};

class CoreMlPackage {
 public:
  // Opens and checks the package at `uri` (a directory in `store`).
  static absl::StatusOr<CoreMlPackage> Open(ObjectStore& store, const std::string& uri);

  const std::string& uri() const { return uri_; }
  const coreml::Model& model() const { return model_; }
  const std::string& model_uri() const { return model_uri_; }
  uint64_t model_bytes() const { return model_bytes_; }
  // The weight file a blobFileValue names ("@model_path/weights/weight.bin": its last path part,
  // under the root model's weights directory), opened and checked on first use. `who` names
  // the op and parameter for errors.
  absl::StatusOr<const CoreMlWeightFile*> WeightFile(const std::string& file_name, absl::string_view who);

 private:
  ObjectStore* store_ = nullptr;
  std::string uri_;
  std::string model_uri_;
  uint64_t model_bytes_ = 0;
  coreml::Model model_;
  std::map<std::string, std::unique_ptr<CoreMlWeightFile>> weight_files_;  // by file name
};

// The manifest of a package holding one root model and a weights directory, as coremltools
// writes it, with identifiers derived from `model_digest` and `weights_digest` (hex SHA-256s) so
// the same content gives the same bytes.
std::string CoreMlManifestJson(const std::string& model_digest, const std::string& weights_digest);

// The package-relative paths coremltools uses.
inline constexpr char kCoreMlModelPath[] = "Data/com.apple.CoreML/model.mlmodel";
inline constexpr char kCoreMlWeightsDir[] = "Data/com.apple.CoreML/weights";
inline constexpr char kCoreMlWeightFileRef[] = "@model_path/weights/weight.bin";

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_FORMATS_COREML_PACKAGE_H_
