#include "workers/jobs/quantize/layout_quantize_job.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "workers/common/error.h"
#include "workers/formats/safetensors.h"
#include "workers/jobs/quantize/layout_quantize_plan.h"
#include "workers/jobs/quantize/layout_weight_writer.h"
#include "workers/jobs/core/manifest.h"
#include "workers/jobs/core/publication.h"
#include "workers/jobs/core/progress_tracker.h"
#include "workers/jobs/quantize/quantize_report.h"
#include "workers/jobs/shard/shard_plan.h"
#include "workers/jobs/core/rate_limiter.h"
#include "workers/jobs/core/publication.h"
#include "workers/storage/checksum.h"
#include "workers/storage/pipelined_writer.h"

namespace modelsmith {
namespace {

using nlohmann::ordered_json;

// Data chunks waiting for the writer thread (two or three chunks).
constexpr uint64_t kQueuedWriteBytes = 32 << 20;

// The config.json the loaders need next to the weights.
nlohmann::json OutputConfig(const LayoutPlan& plan, const std::vector<std::string>& kept_modules) {
  nlohmann::json config = plan.config.value_or(nlohmann::json::object());
  const LayoutSpec& spec = plan.spec;
  switch (spec.layout) {
    case Layout::kBnbInt8:
    case Layout::kBnbNf4:
    case Layout::kBnbFp4: {
      const bool eight = spec.layout == Layout::kBnbInt8;
      std::string compute = "float32";
      for (const LayoutTensorPlan& t : plan.tensors) {
        if (t.quantize) {
          compute = TorchDtypeName(t.stored);
          break;
        }
      }
      config["quantization_config"] = {
          {"quant_method", "bitsandbytes"},
          {"_load_in_8bit", eight},
          {"_load_in_4bit", !eight},
          {"load_in_8bit", eight},
          {"load_in_4bit", !eight},
          {"llm_int8_threshold", 6.0},
          {"llm_int8_skip_modules", kept_modules.empty() ? nlohmann::json(nullptr) : nlohmann::json(kept_modules)},
          {"llm_int8_enable_fp32_cpu_offload", false},
          {"llm_int8_has_fp16_weight", false},
          {"bnb_4bit_quant_type", spec.layout == Layout::kBnbNf4 ? "nf4" : "fp4"},
          {"bnb_4bit_use_double_quant", spec.double_quant},
          {"bnb_4bit_compute_dtype", compute},
          {"bnb_4bit_quant_storage", "uint8"},
      };
      break;
    }
    case Layout::kChatglmInt8: config["quantization_bit"] = 8; break;
    case Layout::kChatglmInt4: config["quantization_bit"] = 4; break;
    case Layout::kQuantoInt8:
    case Layout::kQuantoInt4: break;  // quanto reloads from quanto_qmap.json and the original config
  }
  return config;
}

// The written file's header and tensor table, re-read, against the plan.
absl::Status CheckWritten(const RandomAccessObject& written, const std::vector<SafetensorsEntry>& expected) {
  absl::StatusOr<SafetensorsHeader> header = ReadSafetensorsHeader(written);
  if (!header.ok()) return Annotate(header.status(), "verifying the written safetensors file");
  bool same = header->tensors.size() == expected.size();
  for (size_t i = 0; same && i < expected.size(); ++i) {
    same = header->tensors[i].name == expected[i].name && header->tensors[i].size_bytes == expected[i].size_bytes &&
           header->tensors[i].shape == expected[i].shape;
  }
  if (!same)
    return MakeError(absl::StatusCode::kDataLoss, "VERIFY_MISMATCH",
                     "the written tensor table does not match the plan");
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateLayoutQuantizeSpec(const v1::QuantizeSpec& spec) {
  if (spec.input().empty()) return FieldError("MISSING_FIELD", "quantize.input", "'quantize.input' is required");
  if (spec.output().empty()) return FieldError("MISSING_FIELD", "quantize.output", "'quantize.output' is required");
  if (absl::EndsWith(spec.output(), ".gguf") || absl::EndsWith(spec.output(), ".safetensors")) {
    return FieldError(
        "INVALID_OUTPUT", "quantize.output",
        absl::StrCat("output '", spec.output(), "' must be a directory for scheme '", spec.scheme(), "'"));
  }
  if (!spec.stem().empty()) {
    if (absl::Status s = ValidateShardNaming(spec.stem(), ""); !s.ok())
      return WithReason(s, ReasonOf(s), {{"field", "quantize.stem"}});
  }
  if (spec.snr_warning_db() < 0 || !std::isfinite(spec.snr_warning_db())) {
    return FieldError("INVALID_VALUE", "quantize.snr_warning_db", "must be a non-negative number of dB");
  }
  return ParseLayoutSpec(spec).status();
}

absl::StatusOr<v1::JobResult> ProduceLayoutQuantize(LayoutPlan& layout_plan, const JobRun& run, JobContext& context) {
  const auto start = std::chrono::steady_clock::now();
  const v1::QuantizeSpec& spec = run.spec.quantize();
  LayoutPlan* plan = &layout_plan;
  absl::StatusOr<Publication> output =
      Publication::ForDirectory(*run.router, spec.output(), spec.overwrite(), run.attempt, "quantize.output");
  if (!output.ok()) return output.status();

  ProgressTracker tracker(context, plan->model.tensor_bytes, plan->tensors.size());
  tracker.SetPhase("plan");
  const std::string header = SerializeSafetensorsHeader(plan->entries, {{"format", "pt"}});
  uint64_t file_bytes = header.size();
  for (const SafetensorsEntry& e : plan->entries) file_bytes += e.size_bytes;
  context.Log(absl::StrFormat("quantizing '%s' (%d tensors, %d bytes) to %s in '%s'", plan->model.uri,
                              plan->tensors.size(), plan->model.tensor_bytes, spec.scheme(), output->uri()));
  if (!plan->config) {
    context.Warn("CONFIG_MISSING",
                 "the input has no config.json; the output's config.json holds only the quantization settings, "
                 "so add the model's own settings before loading it with transformers",
                 "");
  }

  const std::string model_uri =
      output->UriOf(absl::StrCat(spec.stem().empty() ? std::string("model") : spec.stem(), ".safetensors"));
  absl::StatusOr<std::unique_ptr<ObjectWriter>> writer = output->OpenWriter(model_uri);
  if (!writer.ok()) return writer.status();
  PipelinedWriter out(*std::move(writer), kQueuedWriteBytes, PipelinedWriter::ReadBackCheck::kDigest);
  auto fail = [&](absl::Status status) -> absl::Status {
    out.Abort();
    return status;
  };
  if (absl::Status s = out.Append({reinterpret_cast<const std::byte*>(header.data()), header.size()}); !s.ok())
    return fail(s);

  tracker.SetPhase("execute");
  RateLimiter pace(run.io_bytes_per_second);
  QuantizeReport report(spec.snr_warning_db());
  ordered_json qmap = ordered_json::object();
  std::vector<std::string> kept_modules;
  for (const LayoutTensorPlan& t : plan->tensors) {
    if (absl::Status s = StopStatus(context); !s.ok()) return fail(s);
    const RandomAccessObject& file = *plan->model.files[t.source->file_index].object;
    if (t.reader != nullptr) {
      context.Warn("REQUANTIZED",
                   absl::StrCat("tensor '", t.source->name, "' was ", t.reader->layout(),
                                "; it was dequantized and its lost precision cannot come back"),
                   t.source->name);
    }
    if (!t.quantize) {
      if (t.warn_not_quantizable) {
        context.Warn("TENSOR_NOT_QUANTIZABLE",
                     absl::StrCat("tensor '", t.source->name, "' with rows of ", t.source->shape.back(),
                                  " elements cannot take ", spec.scheme(), "; kept as ", DTypeName(t.source->dtype)),
                     t.source->name);
      }
      if (t.source->shape.size() == 2 && absl::EndsWith(t.source->name, ".weight")) {
        kept_modules.push_back(t.source->name.substr(0, t.source->name.size() - std::strlen(".weight")));
      }
      if (t.reader != nullptr) {
        QualityStats quality;
        if (absl::Status s = WriteDequantizedWeight(t, file, out, tracker, pace, context, quality); !s.ok())
          return fail(s);
        report.AddTranscoded(context, t.source->name, std::string(DTypeName(t.source->dtype)), quality,
                             /*quantized=*/false);
      } else {
        if (absl::Status s = CopyTensorBytes(*t.source, file, out, tracker, pace, context); !s.ok()) return fail(s);
        report.AddKept();
      }
      tracker.AddTensors(1);
      continue;
    }
    QualityStats quality;
    if (absl::Status s = WriteQuantizedWeight(plan->spec, t, file, out, tracker, pace, context, quality); !s.ok()) {
      return fail(s);
    }
    tracker.AddTensors(1);
    report.AddTranscoded(context, t.source->name, spec.scheme(), quality, /*quantized=*/true);
    const bool quanto = plan->spec.layout == Layout::kQuantoInt8 || plan->spec.layout == Layout::kQuantoInt4;
    if (quanto) {
      qmap[t.module] = {{"weights", plan->spec.layout == Layout::kQuantoInt8 ? "qint8" : "qint4"},
                        {"activations", "none"}};
    }
  }

  absl::StatusOr<v1::Artifact> model_artifact = output->Stage(
      out, file_bytes, "model", [&](const RandomAccessObject& written) { return CheckWritten(written, plan->entries); },
      tracker, context);
  if (!model_artifact.ok()) return model_artifact.status();

  std::vector<std::pair<std::string, std::string>> small_files = {
      {"config.json", OutputConfig(*plan, kept_modules).dump(2) + "\n"}};
  if (!qmap.empty()) small_files.emplace_back("quanto_qmap.json", qmap.dump(4));
  for (const auto& [name, text] : small_files) {
    absl::StatusOr<v1::Artifact> artifact = output->WriteSmall(output->UriOf(name), text, "config");
    if (!artifact.ok()) return artifact.status();
  }

  v1::JobResult result;
  ordered_json manifest = report.Finish(run, plan->model, start, tracker, &result);
  if (absl::Status s = output->Publish(std::move(manifest), result, tracker, context); !s.ok()) return s;
  return result;
}

}  // namespace modelsmith
