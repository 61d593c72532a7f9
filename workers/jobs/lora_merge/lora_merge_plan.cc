#include "workers/jobs/lora_merge/lora_merge_plan.h"

#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "workers/common/error.h"
#include "workers/formats/quantized_layout.h"
#include "workers/formats/tensor_reader.h"
#include "workers/formats/zip_archive.h"
#include "workers/jobs/convert/gguf_to_hf.h"
#include "workers/quant/cast.h"
#include "workers/quant/quantize_rows.h"
#include "workers/storage/uri.h"
#include "workers/tensor/ggml_types.h"

namespace modelsmith {
namespace {

constexpr uint64_t kAdapterConfigMaxBytes = 1 << 20;
// Mismatches listed in a failure's message; the rest are counted.
constexpr size_t kReportedMismatches = 20;

std::string AdapterField(size_t i) { return absl::StrCat("lora_merge.adapters[", i, "]"); }

// A 0-d alpha (or any small float tensor's first value) read from the adapter's file.
ScalarReader AdapterScalars(const ModelView& view) {
  return [&view](const TensorInfo& t) -> absl::StatusOr<double> {
    if (!IsCastableFloat(t.dtype) || t.size_bytes == 0 || t.size_bytes > 8) {
      return MakeError(
          absl::StatusCode::kInvalidArgument, "LORA_CONFIG_INVALID",
          absl::StrCat("adapter tensor '", t.name, "' must be a single float value, not ", DTypeName(t.dtype)),
          {{"tensor", t.name}});
    }
    std::byte raw[8];
    const uint64_t width = DTypeBits(t.dtype) / 8;
    if (absl::Status s = ReadTensorBytes(*view.files[t.file_index].object, t, 0, width, raw); !s.ok()) return s;
    float value = 0;
    CastCounts ignored;
    CastElements(t.dtype, DType::kF32, raw, 1, reinterpret_cast<std::byte*>(&value), &ignored);
    return static_cast<double>(value);
  };
}

absl::Status CheckAdapterDtypes(const LoraAdapter& adapter, const std::string& field) {
  for (const LoraModule& m : adapter.modules) {
    for (const TensorInfo* t : {m.down, m.up, m.magnitude}) {
      if (t == nullptr ||
          (t->dtype == DType::kF32 || t->dtype == DType::kF16 || t->dtype == DType::kBF16 || t->dtype == DType::kF64)) {
        continue;
      }
      return MakeError(absl::StatusCode::kInvalidArgument, "LORA_DTYPE_UNSUPPORTED",
                       absl::StrCat("adapter tensor '", t->name, "' is ", DTypeName(t->dtype),
                                    "; LoRA matrices must be F32, F16, BF16 or F64"),
                       {{"tensor", t->name}, {"field", field}});
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LoraAdapterInput>> OpenAdapter(const v1::LoraAdapter& spec, size_t i,
                                                              const StorageRouter& router) {
  const std::string field = AdapterField(i);
  absl::StatusOr<Location> location = router.Resolve(spec.uri());
  if (!location.ok()) return WithReason(location.status(), ReasonOf(location.status()), {{"field", field}});
  absl::StatusOr<ModelView> view = OpenModel(*location);
  if (!view.ok()) return WithReason(view.status(), ReasonOf(view.status()), {{"field", field}});
  if (view->format == "gguf") {
    return FieldError(
        "LORA_NOT_AN_ADAPTER", field,
        absl::StrCat("'", view->uri,
                     "' is a GGUF file; adapters are read as PEFT, kohya or diffusers safetensors or .bin files"));
  }
  auto input = std::make_unique<LoraAdapterInput>();
  input->uri = view->uri;
  input->strength = spec.strength() == 0 ? 1.0 : spec.strength();
  input->view = *std::move(view);
  absl::StatusOr<std::optional<nlohmann::json>> config =
      ReadJsonObject(*location->store, JoinUri(ParentUri(input->view.files.front().uri), "adapter_config.json"),
                     kAdapterConfigMaxBytes);
  if (!config.ok()) return WithReason(config.status(), ReasonOf(config.status()), {{"field", field}});
  absl::StatusOr<LoraAdapter> adapter =
      ParseLoraAdapter(input->view.tensors, *config, input->view.metadata, AdapterScalars(input->view));
  if (!adapter.ok()) {
    ErrorContext context = ContextOf(adapter.status());
    context["field"] = field;
    return WithReason(Annotate(adapter.status(), absl::StrCat("adapter '", input->uri, "'")),
                      ReasonOf(adapter.status()), context);
  }
  input->adapter = *std::move(adapter);
  if (absl::Status s = CheckAdapterDtypes(input->adapter, field); !s.ok()) return s;
  return input;
}

// The weight shape each adapter module implies ([out, in] or [out, in, kh, kw]), by the module
// path a quantized layout's group is named by: what a quanto qint4 checkpoint does not record.
// Kohya's flattened paths are resolved against the base's qint4 modules.
std::map<std::string, std::vector<uint64_t>> ShapeHints(
    const ModelView& base, const std::vector<std::unique_ptr<LoraAdapterInput>>& adapters) {
  std::map<std::string, std::string> module_of_flat;
  for (const TensorInfo& t : base.tensors) {
    if (!absl::EndsWith(t.name, ".weight._data._data")) continue;
    const std::string module = t.name.substr(0, t.name.size() - std::strlen(".weight._data._data"));
    module_of_flat[absl::StrReplaceAll(module, {{".", "_"}})] = module;
  }
  std::map<std::string, std::vector<uint64_t>> hints;
  for (const auto& adapter : adapters) {
    for (const LoraModule& m : adapter->adapter.modules) {
      const std::vector<uint64_t>& a = m.down->shape;
      if (m.fan_in_fan_out || m.up->shape.empty() || a.size() < 2) continue;
      std::vector<uint64_t> shape = {m.up->shape[0]};
      shape.insert(shape.end(), a.begin() + 1, a.end());
      if (m.flattened) {
        if (auto it = module_of_flat.find(m.path); it != module_of_flat.end()) hints[it->second] = shape;
        continue;
      }
      hints[m.path] = shape;
      if (!m.component.empty()) hints[absl::StrCat(m.component, ".", m.path)] = shape;
    }
  }
  return hints;
}

// The base's tensors under the names adapters use. A GGUF of the Llama family takes Hugging Face
// names; a quantized GGUF tensor stands in as F32 (it is decoded to F32 for the merge).
absl::Status BuildCandidates(LoraMergePlan& plan, std::map<size_t, std::vector<uint64_t>>& row_sources) {
  std::optional<GgufToHf> names;
  if (plan.gguf()) {
    absl::StatusOr<GgufToHf> mapped = MapGgufToHf(plan.base);
    if (mapped.ok()) names = *std::move(mapped);
  }
  for (size_t i = 0; i < plan.base.tensors.size(); ++i) {
    // A quantized group stands in as one float "<module>.weight" at its first tensor.
    const QuantizedWeightReader* reader = nullptr;
    const TensorInfo* stand_in = plan.requantize.StandIn(plan.base.tensors[i], &reader);
    if (stand_in == nullptr) continue;
    TensorInfo t = *stand_in;
    if (names) {
      auto it = names->tensors.find(t.name);
      if (it == names->tensors.end()) continue;  // no Hugging Face counterpart: not a target
      t.name = it->second.name;
      if (!it->second.row_source.empty()) row_sources[i] = it->second.row_source;
    }
    if (t.ggml_type && GgmlTraits(*t.ggml_type)->quantized) t.dtype = DType::kF32;
    plan.candidates.push_back(std::move(t));
    plan.candidate_of.push_back(i);
  }
  return absl::OkStatus();
}

// The layout kernels' settings that reproduce the base's group: the block size from the
// bitsandbytes quant_state JSON, double quantization from nested_absmax, quanto's group from
// the packed data's row length, ChatGLM's bits from the layout name.
absl::StatusOr<LayoutSpec> LayoutSpecOf(const LoraMergePlan& plan, const QuantizedWeightReader& reader,
                                        const std::vector<size_t>& group) {
  LayoutSpec spec;
  const std::string& layout = reader.layout();
  auto refuse = [&](absl::string_view why) {
    return MakeError(absl::StatusCode::kUnimplemented, "LORA_QUANTIZED_BASE_NOT_IMPLEMENTED",
                     absl::StrCat("base weight '", reader.name(), "' is ", layout, ": ", why),
                     {{"tensor", reader.name()}, {"field", "lora_merge.base"}});
  };
  if (layout == "bnb_int8") {
    spec.layout = Layout::kBnbInt8;
  } else if (layout == "bnb_nf4" || layout == "bnb_fp4") {
    spec.layout = layout == "bnb_nf4" ? Layout::kBnbNf4 : Layout::kBnbFp4;
    for (size_t i : group) {
      const TensorInfo& t = plan.base.tensors[i];
      if (absl::EndsWith(t.name, ".nested_absmax")) spec.double_quant = true;
      if (!absl::StrContains(t.name, ".quant_state.bitsandbytes__")) continue;
      if (t.size_bytes > (64 << 10)) return refuse("its quant_state is over 64 KiB");
      std::string text(t.size_bytes, '\0');
      if (absl::Status s = plan.base.files[t.file_index].object->ReadAt(t.data_offset, t.size_bytes,
                                                                        reinterpret_cast<std::byte*>(text.data()));
          !s.ok()) {
        return s;
      }
      const nlohmann::json state = nlohmann::json::parse(text, nullptr, false);
      if (!state.is_object() || !state.contains("blocksize") || !state["blocksize"].is_number_unsigned()) {
        return refuse("its quant_state JSON has no blocksize");
      }
      spec.bnb_block = state["blocksize"].get<size_t>();
    }
  } else if (layout == "quanto_qint8") {
    spec.layout = Layout::kQuantoInt8;
  } else if (layout == "quanto_qint4") {
    spec.layout = Layout::kQuantoInt4;
    for (size_t i : group) {
      const TensorInfo& t = plan.base.tensors[i];
      if (absl::EndsWith(t.name, ".weight._data._data") && t.shape.size() == 2) spec.quanto_group = t.shape[1];
    }
  } else if (layout == "chatglm_int8" || layout == "chatglm_int4") {
    spec.layout = layout == "chatglm_int8" ? Layout::kChatglmInt8 : Layout::kChatglmInt4;
  } else {
    return refuse(
        "merging into this layout is not built yet (bitsandbytes int8/NF4/FP4, quanto qint8/qint4 and ChatGLM are)");
  }
  return spec;
}

// Plans the requantization of a merged group and checks that it gives back the base's tensors.
absl::Status PlanLayoutGroup(LoraMergePlan& plan, MergeTensor& m) {
  absl::StatusOr<LayoutSpec> spec = LayoutSpecOf(plan, *m.reader, m.group);
  if (!spec.ok()) return spec.status();
  m.layout = *spec;
  LayoutTensorPlan& p = m.layout_plan;
  p.source = plan.requantize.info_of.at(m.reader).get();
  p.quantize = true;
  p.module = m.reader->name().substr(0, m.reader->name().size() - std::strlen(".weight"));
  p.stored = m.reader->original_type();
  p.rows = m.reader->rows();
  p.cols = m.reader->columns();
  p.group = spec->quanto_group != 0 ? spec->quanto_group : p.cols;
  p.outputs = PlanQuantizedOutputs(*spec, p);
  for (size_t i : m.group) {
    const TensorInfo& t = plan.base.tensors[i];
    bool same = false;
    for (const SafetensorsEntry& e : p.outputs) same |= e.name == t.name && e.dtype == t.dtype && e.shape == t.shape;
    if (!same) {
      return MakeError(
          absl::StatusCode::kUnimplemented, "LORA_QUANTIZED_BASE_NOT_IMPLEMENTED",
          absl::StrCat("base tensor '", t.name, "' (", m.type, ") would be written with another dtype or shape when ",
                       "requantized; merging into it is not built yet"),
          {{"tensor", t.name}, {"field", "lora_merge.base"}});
    }
  }
  return absl::OkStatus();
}

// A torch base is merged in place: each tensor written anew must be exactly its storage record
// (contiguous, from the record's first byte to its last) and the only name that reads it, so the
// merge changes that tensor and nothing else; its record's CRC-32 fields are noted.
absl::Status PlanTorchRecords(LoraMergePlan& plan) {
  std::set<size_t> written;
  for (const auto& [index, m] : plan.merged) {
    if (m.group.empty()) written.insert(index);
    written.insert(m.group.begin(), m.group.end());
  }
  std::map<size_t, ZipArchive> archives;
  for (size_t index : written) {
    const TensorInfo& t = plan.base.tensors[index];
    auto [it, created] = archives.try_emplace(t.file_index);
    if (created) {
      absl::StatusOr<ZipArchive> archive = ReadZipArchive(*plan.base.files[t.file_index].object);
      if (!archive.ok()) return archive.status();
      it->second = *std::move(archive);
    }
    const ZipRecord* record = nullptr;
    for (const ZipRecord& r : it->second.records) {
      if (r.data_offset <= t.data_offset && t.data_offset < r.data_offset + std::max<uint64_t>(r.size, 1)) record = &r;
    }
    std::vector<std::string> sharing;
    for (const TensorInfo& other : plan.base.tensors) {
      if (&other == &t || other.file_index != t.file_index || record == nullptr) continue;
      if (other.data_offset < record->data_offset + record->size &&
          record->data_offset < other.data_offset + std::max<uint64_t>(other.size_bytes, 1)) {
        sharing.push_back(other.name);
      }
    }
    for (const TensorAlias& alias : plan.base.aliases) {
      if (alias.target == t.name) sharing.push_back(alias.name);
    }
    const bool whole =
        record != nullptr && t.strides.empty() && t.data_offset == record->data_offset && t.size_bytes == record->size;
    if (!whole || !sharing.empty()) {
      return MakeError(
          absl::StatusCode::kFailedPrecondition, "LORA_TARGET_SHARED_STORAGE",
          absl::StrCat("base tensor '", t.name, "' of torch checkpoint '", plan.base.files[t.file_index].name, "' ",
                       sharing.empty() ? "is a view of part of its storage"
                                       : absl::StrCat("shares its storage with ", absl::StrJoin(sharing, ", ")),
                       ", so merging into it would change other tensors too; convert the base to safetensors first"),
          {{"tensor", t.name}, {"field", "lora_merge.base"}});
    }
    plan.crc_fields[index] = record->crc_fields;
  }
  return absl::OkStatus();
}

// The spec's dequantize_dtype as a ggml float type; nullopt when empty or unknown.
std::optional<GgmlType> DequantizeDtype(const v1::LoraMergeSpec& spec) {
  const std::string name = absl::AsciiStrToLower(spec.dequantize_dtype());
  if (name == "f16") return GgmlType::kF16;
  if (name == "bf16") return GgmlType::kBF16;
  if (name == "f32") return GgmlType::kF32;
  return std::nullopt;
}

absl::Status UnmatchedError(const std::vector<SkippedKey>& mismatches) {
  std::vector<std::string> lines;
  for (size_t i = 0; i < mismatches.size() && i < kReportedMismatches; ++i) {
    lines.push_back(absl::StrCat("adapter '", mismatches[i].adapter->uri, "' key '", mismatches[i].mismatch.key,
                                 "': ", DescribeMismatch(mismatches[i].mismatch)));
  }
  std::string more = mismatches.size() > kReportedMismatches
                         ? absl::StrCat("; and ", mismatches.size() - kReportedMismatches, " more")
                         : "";
  return MakeError(
      absl::StatusCode::kFailedPrecondition, "LORA_KEYS_UNMATCHED",
      absl::StrCat(mismatches.size(), " adapter key(s) match no base weight (set allow_partial to merge the rest): ",
                   absl::StrJoin(lines, "; "), more),
      {{"tensor", mismatches.front().mismatch.key}, {"field", "lora_merge.adapters"}});
}

}  // namespace

std::string DescribeMismatch(const LoraMismatch& m) {
  if (m.closest.empty()) return m.problem;
  return absl::StrCat(m.problem, " (closest: ", absl::StrJoin(m.closest, ", "), ")");
}

const std::string& MergeTensor::written_name() const {
  return dequantize_to && reader != nullptr ? reader->name() : base->name;
}

std::vector<uint64_t> MergeTensor::written_shape() const {
  return dequantize_to && reader != nullptr ? reader->shape() : base->shape;
}

std::string MergeTensor::written_type() const {
  return dequantize_to ? std::string(GgmlTypeName(*dequantize_to)) : type;
}

bool MergeTensor::quantized() const {
  return reader != nullptr || (base->ggml_type && GgmlTraits(*base->ggml_type)->quantized) ||
         base->dtype == DType::kF8E4M3 || base->dtype == DType::kF8E5M2;
}

namespace {

// The diffusers pipeline component an adapter module's component prefix names: itself, or for
// kohya's "te"/"te1" text_encoder and "te2" text_encoder_2 (kohya's "unet" names a Flux
// transformer too).
bool SameComponent(const std::string& module_component, const std::string& component) {
  if (module_component == component) return true;
  if (module_component == "te" || module_component == "te1") return component == "text_encoder";
  if (module_component == "te2") return component == "text_encoder_2";
  return module_component == "unet" && component == "transformer";
}

// Only the modules of `component` (a pipeline job's component run); a module without one (PEFT)
// applies to any. Stray keys of another component go too.
void KeepComponent(const std::string& component, LoraAdapter& adapter) {
  std::erase_if(adapter.modules,
                [&](const LoraModule& m) { return !m.component.empty() && !SameComponent(m.component, component); });
  std::erase_if(adapter.stray_keys, [&](const std::string& key) {
    const size_t dot = key.find('.');
    const std::string prefix = dot == std::string::npos ? "" : key.substr(0, dot);
    for (const char* known : {"unet", "transformer", "text_encoder", "text_encoder_2", "prior", "decoder"}) {
      if (prefix == known) return prefix != component;
    }
    return false;
  });
}

}  // namespace

absl::Status ValidateLoraMergeSpec(const v1::LoraMergeSpec& spec) {
  if (spec.base().empty()) return FieldError("MISSING_FIELD", "lora_merge.base", "'lora_merge.base' is required");
  if (spec.output().empty()) return FieldError("MISSING_FIELD", "lora_merge.output", "'lora_merge.output' is required");
  if (spec.adapters().empty())
    return FieldError("MISSING_FIELD", "lora_merge.adapters", "at least one adapter is required");
  for (int i = 0; i < spec.adapters_size(); ++i) {
    const v1::LoraAdapter& a = spec.adapters(i);
    if (a.uri().empty())
      return FieldError("MISSING_FIELD", absl::StrCat(AdapterField(i), ".uri"), "every adapter needs a uri");
    if (!std::isfinite(a.strength())) {
      return FieldError("INVALID_VALUE", absl::StrCat(AdapterField(i), ".strength"),
                        "the strength must be a finite number");
    }
  }
  if (!v1::QuantizedBasePolicy_IsValid(spec.policy())) {
    return FieldError("INVALID_VALUE", "lora_merge.policy", absl::StrCat("unknown policy ", spec.policy()));
  }
  if (!spec.dequantize_dtype().empty()) {
    if (spec.policy() != v1::QUANTIZED_BASE_POLICY_DEQUANTIZE) {
      return FieldError("INVALID_VALUE", "lora_merge.dequantize_dtype",
                        "'dequantize_dtype' applies to policy DEQUANTIZE only");
    }
    if (!DequantizeDtype(spec)) {
      return FieldError("INVALID_VALUE", "lora_merge.dequantize_dtype",
                        absl::StrCat("unknown dequantize_dtype '", spec.dequantize_dtype(), "'; use f16, bf16 or f32"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LoraMergePlan>> MakeLoraMergePlan(const v1::LoraMergeSpec& spec,
                                                                 const StorageRouter& router) {
  auto plan = std::make_unique<LoraMergePlan>();
  absl::StatusOr<Location> base = router.Resolve(spec.base());
  if (!base.ok()) return WithReason(base.status(), ReasonOf(base.status()), {{"field", "lora_merge.base"}});
  absl::StatusOr<ModelView> view = OpenModel(*base);
  if (!view.ok()) return WithReason(view.status(), ReasonOf(view.status()), {{"field", "lora_merge.base"}});
  plan->base = *std::move(view);
  absl::StatusOr<std::optional<nlohmann::json>> config = ReadModelConfig(*base->store, plan->base);
  if (!config.ok()) return config.status();
  plan->config = *std::move(config);
  for (int i = 0; i < spec.adapters_size(); ++i) {
    absl::StatusOr<std::unique_ptr<LoraAdapterInput>> adapter = OpenAdapter(spec.adapters(i), i, router);
    if (!adapter.ok()) return adapter.status();
    if (!spec.component().empty()) KeepComponent(spec.component(), (*adapter)->adapter);
    plan->adapters.push_back(*std::move(adapter));
  }
  absl::StatusOr<RequantizeInputs> requantize =
      OpenRequantizeInputs(plan->base, plan->config, /*allow_requantize=*/true, ShapeHints(plan->base, plan->adapters),
                           /*skip_unreadable=*/true);
  if (!requantize.ok())
    return WithReason(requantize.status(), ReasonOf(requantize.status()), {{"field", "lora_merge.base"}});
  plan->requantize = *std::move(requantize);

  std::map<size_t, std::vector<uint64_t>> row_sources;
  if (absl::Status s = BuildCandidates(*plan, row_sources); !s.ok()) return s;
  std::vector<SkippedKey> mismatches;
  for (const std::unique_ptr<LoraAdapterInput>& input : plan->adapters) {
    input->match = MatchLoraAdapter(input->adapter, plan->candidates);
    for (LoraMismatch& m : input->match.mismatches) {
      for (const auto& [module, why] : plan->requantize.unreadable) {
        if (absl::StrContains(m.problem, absl::StrCat("'", module, ".weight'")))
          m.problem = absl::StrCat(m.problem, ": ", why);
      }
      mismatches.push_back({input.get(), m});
    }
  }
  if (!mismatches.empty() && !spec.allow_partial()) return UnmatchedError(mismatches);
  plan->skipped = std::move(mismatches);

  const bool dequantize = spec.policy() == v1::QUANTIZED_BASE_POLICY_DEQUANTIZE;
  const std::optional<GgmlType> dequantize_dtype = DequantizeDtype(spec);
  for (const std::unique_ptr<LoraAdapterInput>& adapter : plan->adapters) {
    for (const LoraTarget& target : adapter->match.targets) {
      const size_t index = plan->candidate_of[target.base - plan->candidates.data()];
      const TensorInfo& stored = plan->base.tensors[index];
      auto [it, created] = plan->merged.try_emplace(index);
      MergeTensor& m = it->second;
      if (created) {
        m.base = &stored;
        m.rows = target.rows;
        m.cols = target.cols;
        const bool quantized = stored.ggml_type && GgmlTraits(*stored.ggml_type)->quantized;
        m.type = stored.ggml_type ? std::string(GgmlTypeName(static_cast<GgmlType>(*stored.ggml_type)))
                                  : std::string(DTypeName(stored.dtype));
        if (quantized && dequantize) {
          m.dequantize_to = dequantize_dtype.value_or(GgmlType::kF16);
          plan->rewritten_files.insert(stored.file_index);
        } else if (quantized && !CanEncode(static_cast<GgmlType>(*stored.ggml_type))) {
          return MakeError(
              absl::StatusCode::kUnimplemented, "LORA_QUANTIZED_BASE_NOT_IMPLEMENTED",
              absl::StrCat("base tensor '", stored.name, "' is ", m.type, ", which this build cannot quantize again"),
              {{"tensor", stored.name}, {"field", "lora_merge.base"}});
        } else if (quantized && NeedsImportance(static_cast<GgmlType>(*stored.ggml_type))) {
          return MakeError(
              absl::StatusCode::kFailedPrecondition, "IMATRIX_REQUIRED",
              absl::StrCat("base tensor '", stored.name, "' is ", m.type,
                           ", which cannot be written again without an importance matrix; merge with policy "
                           "DEQUANTIZE"),
              {{"tensor", stored.name}, {"field", "lora_merge.policy"}});
        }
        if (stored.ggml_type && (stored.shape.size() != 2 || m.cols != stored.shape[1])) {
          return MakeError(
              absl::StatusCode::kUnimplemented, "LORA_SHAPE_NOT_IMPLEMENTED",
              absl::StrCat("GGUF base tensor '", stored.name, "' is not 2-D; merging into it is not built yet"),
              {{"tensor", stored.name}});
        }
        if (auto rs = row_sources.find(index); rs != row_sources.end()) m.row_of_hf_row = rs->second;
        if (auto group = plan->requantize.group_of.find(stored.name); group != plan->requantize.group_of.end()) {
          m.reader = group->second;
          m.type = m.reader->layout();
          for (size_t j = 0; j < plan->base.tensors.size(); ++j) {
            auto member = plan->requantize.group_of.find(plan->base.tensors[j].name);
            if (member != plan->requantize.group_of.end() && member->second == m.reader) m.group.push_back(j);
          }
          if (!dequantize && (m.type == "fp8_e4m3" || m.type == "fp8_e5m2") && m.group.size() == 1) {
            // A bare fp8 weight is a float type: merged and rounded back to it as F16 would be.
            m.reader = nullptr;
            m.group.clear();
            m.type = std::string(DTypeName(stored.dtype));
          } else if (dequantize) {
            if (absl::StartsWith(m.type, "chatglm")) {
              return MakeError(
                  absl::StatusCode::kFailedPrecondition, "LORA_POLICY_UNSUPPORTED",
                  absl::StrCat("base weight '", m.reader->name(), "' is ", m.type,
                               ": ChatGLM's loader quantizes every layer from config.json's quantization_bit, so a "
                               "partly dequantized checkpoint would not load; use policy REQUANTIZE"),
                  {{"tensor", m.reader->name()}, {"field", "lora_merge.policy"}});
            }
            m.dequantize_to = dequantize_dtype.value_or(
                m.reader->original_type() == StoredFloat::kBF16 ? GgmlType::kBF16 : GgmlType::kF16);
            for (size_t j : m.group) plan->rewritten_files.insert(plan->base.tensors[j].file_index);
          } else if (absl::Status s = PlanLayoutGroup(*plan, m); !s.ok()) {
            return s;
          }
          for (size_t j : m.group) plan->group_member[j] = index;
        }
      }
      if (!m.row_of_hf_row.empty() && target.module->fan_in_fan_out) {
        return MakeError(absl::StatusCode::kFailedPrecondition, "LORA_KEYS_UNMATCHED",
                         absl::StrCat("module '", target.module->key, "' is fan_in_fan_out, but its GGUF base '",
                                      stored.name, "' has permuted rows of a [out, in] weight"),
                         {{"tensor", target.module->key}});
      }
      m.updates.push_back({adapter.get(), &target});
      ++plan->modules_matched;
    }
  }
  if (plan->base.is_torch()) {
    if (!plan->rewritten_files.empty()) {
      return MakeError(
          absl::StatusCode::kUnimplemented, "LORA_POLICY_NOT_IMPLEMENTED",
          absl::StrCat(
              "policy DEQUANTIZE on torch base '", plan->base.uri,
              "' is not built yet (it rewrites the pickled state dict); use REQUANTIZE, or convert the base to "
              "safetensors first"),
          {{"field", "lora_merge.policy"}});
    }
    if (absl::Status s = PlanTorchRecords(*plan); !s.ok()) return s;
  }
  return plan;
}

}  // namespace modelsmith
