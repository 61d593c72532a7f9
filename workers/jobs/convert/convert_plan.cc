#include "workers/jobs/convert/convert_plan.h"

#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"
#include "workers/jobs/convert/convert_gguf_job.h"
#include "workers/jobs/convert/gguf_to_hf.h"
#include "workers/jobs/shard/shard_plan.h"
#include "workers/jobs/core/size_string.h"
#include "workers/quant/cast.h"
#include "workers/storage/uri.h"

namespace modelsmith {
namespace {

using Rule = ConvertRename;

absl::StatusOr<std::vector<Rule>> CompileRules(const v1::ConvertSpec& spec) {
  std::vector<Rule> rules;
  for (int i = 0; i < spec.rename_size(); ++i) {
    const std::string field = absl::StrCat("convert.rename[", i, "]");
    if (spec.rename(i).pattern().empty())
      return FieldError("INVALID_REGEX", field, absl::StrCat("'", field, ".pattern' is empty"));
    absl::StatusOr<Pattern> pattern = Pattern::Compile(spec.rename(i).pattern(), field);
    if (!pattern.ok()) return pattern.status();
    rules.push_back({*std::move(pattern), spec.rename(i).replacement()});
  }
  return rules;
}

absl::StatusOr<std::vector<Pattern>> CompileKeep(const v1::ConvertSpec& spec) {
  std::vector<Pattern> keep;
  for (int i = 0; i < spec.keep_size(); ++i) {
    absl::StatusOr<Pattern> pattern = Pattern::Compile(spec.keep(i), absl::StrCat("convert.keep[", i, "]"));
    if (!pattern.ok()) return pattern.status();
    keep.push_back(*std::move(pattern));
  }
  return keep;
}

// The name the input is known by: the index for sharded input, else the (first) file.
std::string InputName(const ModelView& model) {
  if (!model.index_uri.empty()) return std::string(BaseName(model.index_uri));
  return model.files.empty() ? std::string() : model.files.front().name;
}

bool IsBlockGgml(const TensorInfo& t) {
  if (!t.ggml_type) return false;
  std::optional<GgmlTypeTraits> traits = GgmlTraits(*t.ggml_type);
  return traits && traits->quantized;
}

}  // namespace

bool ConvertTensor::row_wise() const { return !row_source.empty() || IsBlockGgml(*source); }

const std::vector<uint64_t>& ConvertTensor::shape() const {
  return shape_override.empty() ? source->shape : shape_override;
}

absl::StatusOr<DType> ParseConvertDtype(absl::string_view name) {
  static const std::map<std::string, DType> names = {
      {"f32", DType::kF32},        {"fp32", DType::kF32},
      {"float32", DType::kF32},    {"f16", DType::kF16},
      {"fp16", DType::kF16},       {"float16", DType::kF16},
      {"bf16", DType::kBF16},      {"bfloat16", DType::kBF16},
      {"f8_e4m3", DType::kF8E4M3}, {"float8_e4m3fn", DType::kF8E4M3},
      {"f8_e5m2", DType::kF8E5M2}, {"float8_e5m2", DType::kF8E5M2},
  };
  auto it = names.find(absl::AsciiStrToLower(name));
  if (it == names.end()) {
    return FieldError("INVALID_DTYPE", "convert.dtype",
                      absl::StrCat("dtype '", name, "' is not one of f32, f16, bf16, f8_e4m3, f8_e5m2"));
  }
  return it->second;
}

std::string DefaultStem(absl::string_view name) {
  std::string stem(name.substr(0, name.find('.')));
  // A shard suffix "-00001-of-00002".
  constexpr absl::string_view kShape = "-#####-of-#####";
  if (stem.size() >= kShape.size()) {
    const absl::string_view tail = absl::string_view(stem).substr(stem.size() - kShape.size());
    bool shard = true;
    for (size_t i = 0; i < kShape.size(); ++i) {
      shard = shard && (kShape[i] == '#' ? absl::ascii_isdigit(tail[i]) : tail[i] == kShape[i]);
    }
    if (shard) stem.resize(stem.size() - kShape.size());
  }
  if (stem == "pytorch_model") stem = "model";
  return stem.empty() ? "model" : stem;
}

absl::StatusOr<ConvertOptions> ParseConvertOptions(const v1::ConvertSpec& spec) {
  if (spec.input().empty()) return FieldError("MISSING_FIELD", "convert.input", "'convert.input' is required");
  if (spec.output().empty()) return FieldError("MISSING_FIELD", "convert.output", "'convert.output' is required");
  if (spec.target_format() == v1::TARGET_FORMAT_UNSPECIFIED) {
    return FieldError("MISSING_FIELD", "convert.target_format",
                      "'convert.target_format' is required (safetensors or gguf)");
  }
  if (!v1::TargetFormat_IsValid(spec.target_format())) {
    return FieldError("INVALID_ENUM", "convert.target_format", "unknown target format");
  }
  ConvertOptions options;
  options.spec = spec;
  if (spec.target_format() == v1::TARGET_FORMAT_GGUF) {
    if (absl::Status s = ValidateConvertToGguf(spec); !s.ok()) return s;
    options.gguf = true;
    return options;
  }
  if (!spec.dtype().empty()) {
    absl::StatusOr<DType> d = ParseConvertDtype(spec.dtype());
    if (!d.ok()) return d.status();
    options.dtype = *d;
  }
  if (!spec.max_shard_size().empty()) {
    absl::StatusOr<uint64_t> limit = ParseSize(spec.max_shard_size());
    if (!limit.ok()) return WithReason(limit.status(), "INVALID_SIZE", {{"field", "convert.max_shard_size"}});
    options.max_shard_size_bytes = *limit;
  }
  if (!v1::ShardStrategy_IsValid(spec.strategy()))
    return FieldError("INVALID_ENUM", "convert.strategy", "unknown shard strategy");
  if (absl::Status s = ValidateShardNaming(spec.stem().empty() ? "model" : spec.stem(), spec.variant()); !s.ok()) {
    return WithReason(s, ReasonOf(s), {{"field", absl::StrCat("convert.", ContextOf(s)["field"])}});
  }
  absl::StatusOr<std::vector<Rule>> rules = CompileRules(spec);
  if (!rules.ok()) return rules.status();
  options.rename = *std::move(rules);
  absl::StatusOr<std::vector<Pattern>> keep = CompileKeep(spec);
  if (!keep.ok()) return keep.status();
  options.keep = *std::move(keep);
  return options;
}

absl::StatusOr<ConvertPlan> MakeConvertPlan(const ConvertOptions& options, const StorageRouter& router) {
  const v1::ConvertSpec& spec = options.spec;
  absl::StatusOr<Location> input = router.Resolve(spec.input());
  if (!input.ok()) return WithReason(input.status(), ReasonOf(input.status()), {{"field", "convert.input"}});
  absl::StatusOr<ModelView> model = OpenModel(*input);
  if (!model.ok()) return WithReason(model.status(), ReasonOf(model.status()), {{"field", "convert.input"}});
  std::optional<GgufToHf> hf;
  if (model->gguf) {
    absl::StatusOr<GgufToHf> mapped = MapGgufToHf(*model);
    if (!mapped.ok()) return WithReason(mapped.status(), ReasonOf(mapped.status()), {{"field", "convert.input"}});
    hf = *std::move(mapped);
  }
  if (model->tensors.empty()) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "MODEL_EMPTY",
                     absl::StrCat("input '", model->uri, "' holds no tensors; there is nothing to convert"),
                     {{"field", "convert.input"}});
  }
  const std::vector<Rule>& rules = options.rename;
  const std::vector<Pattern>& keep = options.keep;
  const bool cast = options.dtype.has_value();
  const DType target = options.dtype.value_or(DType::kF32);

  ConvertPlan plan;
  plan.model = *std::move(model);
  plan.stem = !spec.stem().empty() ? spec.stem() : hf ? "model" : DefaultStem(InputName(plan.model));
  if (hf) {
    plan.config = hf->config;
    plan.tokenizer_files = hf->tokenizer_files;
    plan.dropped = hf->dropped;
  }
  if (absl::Status s = ValidateShardNaming(plan.stem, spec.variant()); !s.ok()) {
    return WithReason(s, ReasonOf(s), {{"field", "convert.stem"}});
  }
  std::map<std::string, std::string> origin;  // output name -> input name
  plan.tensors.reserve(plan.model.tensors.size());
  for (const TensorInfo& t : plan.model.tensors) {
    // What the source becomes: itself, its Hugging Face counterpart, or (stacked GGUF experts)
    // one Hugging Face tensor per expert.
    std::vector<HfTensor> outputs = {HfTensor{t.name, {}, {}}};
    if (hf) {
      auto it = hf->tensors.find(t.name);
      auto experts = hf->experts.find(t.name);
      if (experts != hf->experts.end()) {
        outputs = experts->second;
      } else if (it != hf->tensors.end()) {
        outputs = {it->second};
      } else {
        continue;  // dropped (listed in plan.dropped)
      }
    }
    for (const HfTensor& output : outputs) {
      ConvertTensor c;
      c.source = &t;
      c.name = output.name;
      c.row_source = output.row_source;
      c.shape_override = output.shape;
      c.add = output.add;
      for (const Rule& rule : rules) {
        if (std::optional<std::string> renamed = rule.pattern.ReplaceFullMatch(c.name, rule.replacement)) {
          c.name = *std::move(renamed);
        }
      }
      if (c.name.empty()) {
        return FieldError("RENAME_EMPTY", "convert.rename",
                          absl::StrCat("the rename rules turn '", t.name, "' into an empty name"));
      }
      if (auto [it, inserted] = origin.try_emplace(c.name, t.name); !inserted) {
        return FieldError(
            "RENAME_COLLISION", "convert.rename",
            absl::StrCat("tensors '", it->second, "' and '", t.name, "' would both be named '", c.name, "'"));
      }
      if (c.name != t.name) plan.renamed.emplace_back(t.name, c.name);
      c.dtype = t.dtype;
      if (IsBlockGgml(t)) c.dtype = cast ? target : DType::kF32;  // dequantized; keep-list cannot keep a block type
      if (cast && IsCastableFloat(t.dtype)) {
        if (!AnyFullMatch(keep, c.name)) c.dtype = target;
      }
      c.size_bytes = *StorageBytes(c.dtype, c.shape());
      plan.output_tensor_bytes += c.size_bytes;
      plan.tensors.push_back(std::move(c));
    }
  }

  if (plan.config) {
    for (const ConvertTensor& c : plan.tensors) {
      if (c.source->shape.size() != 2) continue;
      static const std::map<DType, const char*> torch_names = {
          {DType::kF32, "float32"}, {DType::kF16, "float16"}, {DType::kBF16, "bfloat16"}, {DType::kF64, "float64"}};
      if (auto it = torch_names.find(c.dtype); it != torch_names.end()) (*plan.config)["torch_dtype"] = it->second;
      break;
    }
  }

  // Files: the input's partition, or the shard planner's.
  ShardAssignment assignment;
  const uint64_t limit = options.max_shard_size_bytes;
  if (limit == 0) {
    assignment.resize(hf ? 1 : plan.model.files.size());  // a split GGUF becomes one file
    for (size_t i = 0; i < plan.tensors.size(); ++i)
      assignment[hf ? 0 : plan.tensors[i].source->file_index].push_back(i);
    std::erase_if(assignment, [](const std::vector<size_t>& a) { return a.empty(); });
  } else {
    std::vector<uint64_t> sizes;
    for (const ConvertTensor& c : plan.tensors) sizes.push_back(c.size_bytes);
    assignment = spec.strategy() == v1::SHARD_STRATEGY_BALANCED ? PlanShardsBalanced(sizes, limit)
                                                                : PlanShardsHfGreedy(sizes, limit);
  }
  if (assignment.size() > kMaxShardCount) {
    return FieldError("TOO_MANY_SHARDS", "convert.max_shard_size",
                      absl::StrCat("the limit gives ", assignment.size(), " files; at most ", kMaxShardCount,
                                   " fit Hugging Face names"));
  }
  std::map<std::string, std::string> common_metadata =
      plan.model.is_torch() || hf ? std::map<std::string, std::string>{} : plan.model.metadata;
  common_metadata["format"] = "pt";
  // A tied name left out is recorded in the metadata of the file holding its kept tensor as
  // "dropped": "kept" (both after renaming), never over an existing key, as safetensors'
  // save_model and the Hugging Face converter do, so that load_model restores it.
  std::map<std::string, std::vector<std::string>> dropped_by_kept_source;  // kept input name -> dropped
  for (const TensorAlias& alias : plan.model.aliases) {
    std::string name = alias.name;
    for (const Rule& rule : rules) {
      if (std::optional<std::string> renamed = rule.pattern.ReplaceFullMatch(name, rule.replacement)) name = *renamed;
    }
    dropped_by_kept_source[alias.target].push_back(std::move(name));
  }
  for (size_t f = 0; f < assignment.size(); ++f) {
    ConvertFile file;
    file.name = ShardFileName(plan.stem, spec.variant(), f, assignment.size());
    std::map<std::string, std::string> metadata = common_metadata;
    std::map<std::string, const ConvertTensor*> by_name;
    for (size_t i : assignment[f]) {
      const ConvertTensor& c = plan.tensors[i];
      file.entries.push_back({c.name, c.dtype, c.shape(), c.size_bytes});
      by_name[c.name] = &c;
      auto dropped = dropped_by_kept_source.find(c.source->name);
      if (dropped == dropped_by_kept_source.end()) continue;
      for (const std::string& alias_name : dropped->second) {
        if (!origin.count(alias_name)) metadata.try_emplace(alias_name, c.name);
      }
    }
    SortLikeReferenceWriter(file.entries);
    for (const SafetensorsEntry& e : file.entries) file.tensors.push_back(by_name[e.name]);
    file.header = SerializeSafetensorsHeader(file.entries, metadata);
    file.file_bytes = file.header.size();
    for (const SafetensorsEntry& e : file.entries) file.file_bytes += e.size_bytes;
    plan.files.push_back(std::move(file));
  }
  if (plan.files.size() > 1) plan.index_name = IndexFileName(plan.stem, spec.variant());
  return plan;
}

}  // namespace modelsmith
