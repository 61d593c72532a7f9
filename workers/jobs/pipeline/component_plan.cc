#include "workers/jobs/pipeline/component_plan.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "workers/common/error.h"
#include "workers/jobs/quantize/layout_quantize_plan.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// The spec's oneof field holding the kind (convert, quantize, ...), or null.
const FieldDescriptor* KindOf(const v1::JobSpec& spec) {
  return spec.GetReflection()->GetOneofFieldDescriptor(spec, v1::JobSpec::descriptor()->FindOneofByName("kind"));
}

// The kind's field `name`, or null when the spec has no kind or the kind no such field.
const FieldDescriptor* KindFieldNamed(const v1::JobSpec& spec, const char* name) {
  const FieldDescriptor* kind = KindOf(spec);
  return kind == nullptr ? nullptr : kind->message_type()->FindFieldByName(name);
}

absl::string_view KindField(const v1::JobSpec& spec) {
  const FieldDescriptor* kind = KindOf(spec);
  return kind == nullptr ? absl::string_view() : absl::string_view(kind->name());
}

// A LoRA merge reads its "base"; every other kind its "input".
const char* InputName(const v1::JobSpec& spec) { return KindFieldNamed(spec, "base") ? "base" : "input"; }

std::string StringField(const v1::JobSpec& spec, const char* name) {
  const FieldDescriptor* field = KindFieldNamed(spec, name);
  if (field == nullptr) return "";
  const Message& kind = spec.GetReflection()->GetMessage(spec, KindOf(spec));
  return kind.GetReflection()->GetString(kind, field);
}

void SetStringField(v1::JobSpec& spec, const char* name, const std::string& value) {
  const FieldDescriptor* field = KindFieldNamed(spec, name);
  if (field == nullptr) return;
  Message* kind = spec.GetReflection()->MutableMessage(&spec, KindOf(spec));
  kind->GetReflection()->SetString(kind, field, value);
}

// Overrides merged into the kind's spec. A value is taken as a JSON string first (max_shard_size
// "4" stays a string), then as a JSON literal (block_size 128, double_quant true, keep [..]).
absl::Status ApplyOverrides(const std::string& component, const v1::ComponentOptions& options, v1::JobSpec& spec) {
  static const std::set<std::string> kFixed = {"input", "output", "base", "overwrite", "component"};
  std::vector<std::pair<std::string, std::string>> sorted(options.options().begin(), options.options().end());
  std::sort(sorted.begin(), sorted.end());
  for (const auto& [key, value] : sorted) {
    const std::string field = absl::StrCat("component_options.", component, ".", key);
    if (kFixed.count(key)) {
      return FieldError(
          "COMPONENT_OPTION_INVALID", field,
          absl::StrCat("'", key, "' is set by the pipeline job for each component; it cannot be overridden"));
    }
    v1::JobSpec patch;
    std::string error;
    for (const bool literal : {false, true}) {
      nlohmann::json body = {{std::string(KindField(spec)), {{key, value}}}};
      if (literal) {
        nlohmann::json parsed = nlohmann::json::parse(value, nullptr, false);
        if (parsed.is_discarded()) break;
        body[std::string(KindField(spec))][key] = parsed;
      }
      const auto parsed = google::protobuf::util::JsonStringToMessage(body.dump(), &patch);
      if (parsed.ok()) {
        error.clear();
        break;
      }
      error = std::string(parsed.message().data(), parsed.message().size());
    }
    if (!error.empty()) {
      return FieldError("COMPONENT_OPTION_INVALID", field,
                        absl::StrCat("'", key, "=", value, "' is not a ", KindField(spec), " option: ", error));
    }
    spec.MergeFrom(patch);
  }
  return absl::OkStatus();
}

// A GGUF output is one file, not a pipeline's component folder.
absl::Status CheckDirectoryOutput(const v1::JobSpec& spec) {
  const bool gguf =
      (spec.kind_case() == v1::JobSpec::kConvert && spec.convert().target_format() == v1::TARGET_FORMAT_GGUF) ||
      (spec.kind_case() == v1::JobSpec::kQuantize && !IsLayoutScheme(spec.quantize().scheme()));
  if (!gguf) return absl::OkStatus();
  return MakeError(
      absl::StatusCode::kUnimplemented, "PIPELINE_GGUF_UNSUPPORTED",
      "a diffusers pipeline is written as a pipeline directory; GGUF output is one file per model, so "
      "convert or quantize a component's folder (<pipeline>/<component>) to GGUF on its own",
      {{"field", spec.kind_case() == v1::JobSpec::kConvert ? "convert.target_format" : "quantize.scheme"}});
}

}  // namespace

std::string InputOf(const v1::JobSpec& spec) { return StringField(spec, InputName(spec)); }

std::string OutputOf(const v1::JobSpec& spec) { return StringField(spec, "output"); }

bool OverwriteOf(const v1::JobSpec& spec) {
  const FieldDescriptor* field = KindFieldNamed(spec, "overwrite");
  if (field == nullptr) return false;
  const Message& kind = spec.GetReflection()->GetMessage(spec, KindOf(spec));
  return kind.GetReflection()->GetBool(kind, field);
}

// A component's own spec: the pipeline's, on the component folder, with its overrides.
absl::StatusOr<v1::JobSpec> ComponentSpec(const v1::JobSpec& spec, const PipelineComponent& component,
                                          const std::string& component_dir, const std::string& output) {
  absl::StatusOr<const WeightSet*> weights = ChooseWeights(component, spec.input_variant());
  if (!weights.ok()) return WithReason(weights.status(), ReasonOf(weights.status()), {{"field", "input_variant"}});
  const std::string& stem = (*weights)->stem;
  v1::JobSpec out = spec;
  out.clear_components();
  out.clear_component_options();
  out.clear_input_variant();
  SetStringField(out, InputName(out), JoinUri(component_dir, (*weights)->entry));
  SetStringField(out, "output", output);
  {  // staging is this job's own
    Message* kind = out.GetReflection()->MutableMessage(&out, KindOf(out));
    kind->GetReflection()->SetBool(kind, KindFieldNamed(out, "overwrite"), true);
  }
  if (StringField(out, "stem").empty()) SetStringField(out, "stem", stem);  // kinds with a stem
  SetStringField(out, "component", component.name);                         // a LoRA merge
  if (auto it = spec.component_options().find(component.name); it != spec.component_options().end()) {
    if (absl::Status s = ApplyOverrides(component.name, it->second, out); !s.ok()) return s;
  }
  return out;
}

absl::StatusOr<Selection> SelectComponents(const v1::JobSpec& spec, ObjectStore& store, const std::string& uri) {
  if (absl::Status s = CheckDirectoryOutput(spec); !s.ok()) return s;
  absl::StatusOr<DiffusersPipeline> pipeline = ReadDiffusersPipeline(store, uri);
  if (!pipeline.ok()) return pipeline.status();
  Selection selection{*std::move(pipeline), {}};
  std::vector<std::string> known;
  for (const PipelineComponent& c : selection.pipeline.components) known.push_back(c.name);
  auto find = [&](const std::string& name) -> const PipelineComponent* {
    for (const PipelineComponent& c : selection.pipeline.components) {
      if (c.name == name) return &c;
    }
    return nullptr;
  };
  auto unknown = [&](const std::string& field, const std::string& name) {
    return FieldError("COMPONENT_UNKNOWN", field,
                      absl::StrCat("the pipeline has no component '", name, "'; it has ", absl::StrJoin(known, ", ")));
  };
  if (spec.components().empty()) {
    for (const PipelineComponent& c : selection.pipeline.components) {
      if (c.has_weights()) selection.selected.push_back(&c);
    }
  } else {
    for (const std::string& name : spec.components()) {
      const PipelineComponent* c = find(name);
      if (c == nullptr) return unknown("components", name);
      if (!c->has_weights()) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "COMPONENT_HAS_NO_WEIGHTS",
                         absl::StrCat("component '", name, "' (", c->type, ") holds no weight files to process"),
                         {{"field", "components"}});
      }
      if (std::find(selection.selected.begin(), selection.selected.end(), c) == selection.selected.end())
        selection.selected.push_back(c);
    }
  }
  for (const auto& [name, options] : spec.component_options()) {
    const PipelineComponent* c = find(name);
    if (c == nullptr) return unknown(absl::StrCat("component_options.", name), name);
    if (std::find(selection.selected.begin(), selection.selected.end(), c) == selection.selected.end()) {
      return FieldError("COMPONENT_OPTION_INVALID", absl::StrCat("component_options.", name),
                        absl::StrCat("component '", name, "' has options but is not among the components processed"));
    }
  }
  if (selection.selected.empty()) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "COMPONENT_HAS_NO_WEIGHTS",
                     "no component of the pipeline holds weights", {{"field", "components"}});
  }
  return selection;
}

}  // namespace modelsmith
