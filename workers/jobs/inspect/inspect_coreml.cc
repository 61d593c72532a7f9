#include "workers/jobs/inspect/inspect_coreml.h"

#include <set>

#include "absl/strings/str_join.h"
#include "workers/formats/coreml_package.h"
#include "workers/formats/mil_program.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

std::string ArrayDtype(int data_type) {
  switch (data_type) {
    case 65552: return "fp16";
    case 65568: return "fp32";
    case 65600: return "fp64";
    case 131104: return "int32";
    case 131080: return "int8";
    default: return absl::StrCat("array", data_type);
  }
}

void AddFeatures(const google::protobuf::RepeatedPtrField<coreml::FeatureDescription>& features,
                 google::protobuf::RepeatedPtrField<v1::CoreMlFeature>* out) {
  for (const coreml::FeatureDescription& f : features) {
    v1::CoreMlFeature* feature = out->Add();
    feature->set_name(f.name());
    if (f.type().has_multi_array_type()) {
      feature->set_dtype(ArrayDtype(f.type().multi_array_type().data_type()));
      for (int64_t d : f.type().multi_array_type().shape()) feature->add_shape(d);
    } else {
      feature->set_dtype("non-array");
    }
  }
}

}  // namespace

absl::StatusOr<v1::ModelInfo> InspectCoreMl(const Location& location) {
  absl::StatusOr<CoreMlPackage> package = CoreMlPackage::Open(*location.store, location.uri);
  if (!package.ok()) return package.status();
  absl::StatusOr<MilProgramIndex> index = IndexMilProgram(*package);
  if (!index.ok()) return index.status();
  v1::ModelInfo info;
  info.set_uri(package->uri());
  info.set_format("coreml-mlprogram");
  info.add_files(package->model_uri().substr(package->uri().size() + 1));
  v1::CoreMlProgramInfo* program = info.mutable_coreml();
  program->set_specification_version(package->model().specification_version());
  program->set_opset(index->opset);
  std::set<std::string> functions;
  for (const auto& [name, function] : package->model().ml_program().functions()) functions.insert(name);
  for (const std::string& name : functions) program->add_functions(name);
  AddFeatures(package->model().description().input(), program->mutable_inputs());
  AddFeatures(package->model().description().output(), program->mutable_outputs());
  program->set_op_count(index->ops.size());
  program->set_compute_op_count(index->compute_ops.size());
  std::set<std::string> files, compressions;
  for (const MilWeight& weight : index->weights) {
    const MilOpInfo& op = index->ops[weight.op];
    v1::CoreMlWeight* w = program->add_weights();
    w->set_name(op.name);
    w->set_compression(weight.compression);
    std::vector<std::string> dtypes;
    const MilBlobRef* first_blob = nullptr;
    for (size_t s : weight.sources) {
      for (const MilBlobRef& ref : index->ops[s].blobs) {
        if (first_blob == nullptr) first_blob = &ref;
        const std::string name(MilBlobDtypeName(ref.blob.dtype));
        if (std::find(dtypes.begin(), dtypes.end(), name) == dtypes.end()) dtypes.push_back(name);
        files.insert(std::string(BaseName(ref.file_name)));
      }
    }
    w->set_stored_dtypes(absl::StrJoin(dtypes, "+"));
    if (first_blob != nullptr) w->set_bits(MilBlobDtypeBits(first_blob->blob.dtype));
    w->set_stored_bytes(weight.stored_bytes);
    w->set_dense_bytes(weight.dense_bytes);
    if (weight.first_position >= 0) w->set_first_consumer(index->ops[index->compute_ops[weight.first_position]].name);
    program->set_stored_bytes(program->stored_bytes() + weight.stored_bytes);
    program->set_dense_bytes(program->dense_bytes() + weight.dense_bytes);
    if (weight.compression != "none") compressions.insert(weight.compression);
    // Also as a tensor row: the weight as used, its stored size.
    v1::TensorDescriptor* t = info.add_tensors();
    t->set_name(op.name);
    const coreml::ValueType& type = *index->types.at(op.outputs.front());
    t->set_dtype(MilDataTypeName(type.tensor_type().data_type()));
    for (const auto& d : type.tensor_type().dimensions()) t->add_shape(d.has_constant() ? d.constant().size() : 0);
    t->set_size_bytes(weight.stored_bytes);
    if (first_blob != nullptr) {
      t->set_file(absl::StrCat("weights/", BaseName(first_blob->file_name)));
      t->set_data_offset(first_blob->blob.data_offset);
    }
    if (weight.compression != "none") t->set_quantization(weight.compression);
  }
  for (const std::string& f : files) info.add_files(absl::StrCat("weights/", f));
  info.set_quantization(absl::StrJoin(compressions, ","));
  info.set_total_bytes(program->stored_bytes());
  info.set_tensor_count(index->weights.size());
  return info;
}

}  // namespace modelsmith
