#include "client/render.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/time_util.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "workers/common/error.h"

namespace modelsmith::cli {
namespace {

using google::protobuf::util::TimeUtil;

std::string TimeText(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  std::string text = TimeUtil::ToString(t);
  // "2026-11-22T14:00:00.123456Z" -> "2026-11-22 14:00:00Z"
  if (text.size() > 19) text = absl::StrCat(text.substr(0, 10), " ", text.substr(11, 8), "Z");
  return text;
}

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string ProgressText(const v1::Progress& p) {
  std::string text = p.components_total() > 0 ? absl::StrFormat("component %d/%d %s: %s", p.components_done() + 1,
                                                                p.components_total(), p.component(), p.phase())
                                              : p.phase();
  if (p.bytes_total() > 0) {
    absl::StrAppend(&text, absl::StrFormat(" %5.1f%% %s / %s", 100.0 * p.bytes_done() / p.bytes_total(),
                                           HumanBytes(p.bytes_done()), HumanBytes(p.bytes_total())));
  }
  if (p.tensors_total() > 0)
    absl::StrAppend(&text, absl::StrFormat("  %d/%d tensors", p.tensors_done(), p.tensors_total()));
  if (p.bytes_per_second() > 0) absl::StrAppend(&text, "  ", HumanBytes(p.bytes_per_second()), "/s");
  if (p.eta_seconds() >= 0 && p.bytes_done() < p.bytes_total())
    absl::StrAppend(&text, "  ETA ", HumanDuration(p.eta_seconds()));
  return text;
}

}  // namespace

bool IsInvalidInputCode(int code) {
  switch (static_cast<absl::StatusCode>(code)) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented: return true;
    default: return false;
  }
}

std::string ToJson(const google::protobuf::Message& message, bool multiline) {
  std::string text;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = multiline;
  (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  if (multiline && !text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  constexpr absl::string_view kPrefix = "JOB_STATE_";
  return name.rfind(kPrefix.data(), 0) == 0 ? name.substr(kPrefix.size()) : name;
}

std::string HumanBytes(double bytes) {
  constexpr const char* kUnits[] = {"B", "KB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000 && unit < 4) {
    bytes /= 1000;
    ++unit;
  }
  return unit == 0 ? absl::StrFormat("%.0f B", bytes) : absl::StrFormat("%.2f %s", bytes, kUnits[unit]);
}

std::string HumanDuration(double seconds) {
  if (seconds < 60) return absl::StrFormat("%.1fs", seconds);
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 3600) return absl::StrFormat("%dm %02ds", s / 60, s % 60);
  return absl::StrFormat("%dh %02dm", s / 3600, (s % 3600) / 60);
}

// The kind's own figures of a result (or of one pipeline component's).
void PrintKindFigures(const v1::JobFigures& f, FILE* out) {
  if (f.has_convert()) {
    const v1::ConvertFigures& c = f.convert();
    absl::FPrintF(
        out,
        "  convert: %d tensors in %d file(s), %d cast, %d renamed, %d tied names written once, %d entries skipped\n",
        c.tensors_written(), c.files(), c.tensors_cast(), c.tensors_renamed(), c.aliases_dropped(),
        c.entries_skipped());
    if (c.overflowed_values() + c.saturated_values() > 0) {
      absl::FPrintF(out, "  convert: %d values overflowed to Inf, %d saturated\n", c.overflowed_values(),
                    c.saturated_values());
    }
  }
  if (f.has_quantize()) {
    absl::FPrintF(out, "  quantize: %d tensors quantized, %d kept\n", f.quantize().tensors_quantized(),
                  f.quantize().tensors_kept());
    for (const v1::TensorQuality& q : f.quantize().worst()) {
      absl::FPrintF(out, "    %-48s %-5s SNR %6.2f dB  RMSE %.3g  max|err| %.3g\n", q.name(), q.type(), q.snr_db(),
                    q.rmse(), q.max_abs_error());
    }
  }
  if (f.has_lora_merge()) {
    const v1::LoraMergeFigures& m = f.lora_merge();
    absl::FPrintF(out,
                  "  lora merge: %d adapter(s), %d module(s) merged, %d skipped; %d tensors changed (%d requantized, "
                  "%d dequantized), "
                  "%d copied; %d other file(s) copied\n",
                  m.adapters(), m.modules_matched(), m.modules_skipped(), m.tensors_merged(), m.tensors_requantized(),
                  m.tensors_dequantized(), m.tensors_copied(), m.files_copied());
    for (const v1::MergedTensor& t : m.largest_updates()) {
      absl::FPrintF(out, "    %-48s %-5s |dW|/|W| %.4g  SNR %6.2f dB\n", t.name(), t.type(), t.relative_update(),
                    t.snr_db());
    }
  }
  if (f.has_shard()) {
    std::vector<std::string> sizes;
    for (uint64_t s : f.shard().shard_sizes_bytes()) sizes.push_back(HumanBytes(s));
    absl::FPrintF(out, "  shards: %d (%s), imbalance max/mean %.3f\n", f.shard().shard_count(),
                  absl::StrJoin(sizes, ", "), f.shard().imbalance_ratio());
  }
  if (f.has_bisect()) {
    std::vector<std::string> sizes;
    for (uint64_t s : f.bisect().chunk_sizes_bytes()) sizes.push_back(HumanBytes(s));
    absl::FPrintF(out, "  chunks: %d (%s) cut between %d %s units, imbalance max/mean %.3f\n", f.bisect().chunk_count(),
                  absl::StrJoin(sizes, ", "), f.bisect().units(), f.bisect().granularity(),
                  f.bisect().imbalance_ratio());
  }
}

void PrintJob(const v1::Job& job, FILE* out) {
  std::string kind = v1::JobKind_Name(job.kind());
  if (kind.rfind("JOB_KIND_", 0) == 0) kind = kind.substr(9);
  absl::FPrintF(out, "%s  %s  %s  attempt %d\n", job.id(), kind, StateName(job.state()), job.attempt());
  absl::FPrintF(out, "  created %s  started %s  ended %s\n", TimeText(job.create_time()), TimeText(job.start_time()),
                TimeText(job.end_time()));
  if (!job.owner().empty()) absl::FPrintF(out, "  owner %s\n", job.owner());
  if (job.has_progress()) absl::FPrintF(out, "  progress: %s\n", ProgressText(job.progress()));
  for (const v1::Warning& w : job.warnings()) absl::FPrintF(out, "  warning %s: %s\n", w.code(), w.message());
  if (job.has_error()) {
    absl::FPrintF(out, "  error: %s (%s): %s\n",
                  absl::StatusCodeToString(static_cast<absl::StatusCode>(job.error().code())), job.error().reason(),
                  job.error().message());
  }
  if (job.has_result()) {
    absl::FPrintF(out, "  artifacts:\n");
    for (const v1::Artifact& a : job.result().artifacts()) {
      absl::FPrintF(out, "    %-60s %12s  sha256 %s\n", a.uri(), HumanBytes(a.size_bytes()), a.sha256());
    }
    const v1::JobFigures& f = job.result().figures();
    absl::FPrintF(out, "  figures: %s, read %s, written %s, %s/s, peak RSS %s\n", HumanDuration(f.duration_seconds()),
                  HumanBytes(f.bytes_read()), HumanBytes(f.bytes_written()),
                  HumanBytes(f.throughput_bytes_per_second()), HumanBytes(f.peak_resident_bytes()));
    PrintKindFigures(f, out);
    for (const v1::ComponentFigures& c : f.components()) {
      const v1::JobFigures& cf = c.figures();
      absl::FPrintF(out, "  component %s: %s, read %s, written %s, peak RSS %s\n", c.name(),
                    HumanDuration(cf.duration_seconds()), HumanBytes(cf.bytes_read()), HumanBytes(cf.bytes_written()),
                    HumanBytes(cf.peak_resident_bytes()));
      PrintKindFigures(cf, out);
    }
  }
}

void PrintJobRow(const v1::Job& job, FILE* out) {
  std::string kind = v1::JobKind_Name(job.kind());
  if (kind.rfind("JOB_KIND_", 0) == 0) kind = kind.substr(9);
  std::string progress = "-";
  if (job.progress().bytes_total() > 0) {
    progress = absl::StrFormat("%.0f%%", 100.0 * job.progress().bytes_done() / job.progress().bytes_total());
  }
  absl::FPrintF(out, "%-22s %-10s %-10s %-21s %s\n", job.id(), kind, StateName(job.state()),
                TimeText(job.create_time()), progress);
}

void PrintModel(const v1::ModelInfo& model, FILE* out) {
  absl::FPrintF(out, "%s\n  format %s, %d tensors, %s of tensor data, %d file(s)\n", model.uri(), model.format(),
                model.tensor_count(), HumanBytes(model.total_bytes()), model.files_size());
  if (!model.architecture().empty()) absl::FPrintF(out, "  architecture %s\n", model.architecture());
  if (!model.quantization().empty()) absl::FPrintF(out, "  quantization %s\n", model.quantization());
  if (!model.adapter_format().empty()) {
    absl::FPrintF(out, "  LoRA adapter, %s keys, %d module(s)\n", model.adapter_format(), model.adapter_modules());
  }
  for (const v1::TensorAlias& a : model.aliases())
    absl::FPrintF(out, "  alias %s = %s (tied, stored once)\n", a.name(), a.target());
  for (const std::string& s : model.skipped_entries()) absl::FPrintF(out, "  not a tensor: %s\n", s);
  for (const auto& [key, value] : model.metadata()) absl::FPrintF(out, "  metadata %s = %s\n", key, value);
  std::map<std::string, int> layouts;
  for (const v1::QuantizedModule& q : model.quantized()) ++layouts[q.layout()];
  for (const auto& [layout, count] : layouts) absl::FPrintF(out, "  quantized %d module(s) as %s\n", count, layout);
  for (const v1::PipelineComponentInfo& c : model.components()) {
    if (c.format().empty()) {
      absl::FPrintF(out, "  component %-16s %s %s (no weights; %d file(s))\n", c.name(), c.library(), c.class_name(),
                    c.files_size());
      continue;
    }
    // Quantized tensors that config.json does not declare (or the reverse) load wrong: say so.
    const bool mismatch = c.quantization().empty() != c.declared_quantization().empty();
    absl::FPrintF(out, "  component %-16s %s %s: %s, %s, %d tensors, %s%s%s%s\n", c.name(), c.library(), c.class_name(),
                  c.format(), absl::StrJoin(c.dtypes(), "+"), c.tensor_count(), HumanBytes(c.total_bytes()),
                  c.quantization().empty() ? "" : ", quantized " + c.quantization(),
                  c.declared_quantization().empty() ? "" : ", config.json declares " + c.declared_quantization(),
                  !mismatch ? ""
                  : c.quantization().empty()
                      ? " -- MISMATCH: declared but the tensors are not quantized"
                      : " -- MISMATCH: config.json does not declare it; loaders will misread it");
  }
  if (model.has_coreml()) {
    const v1::CoreMlProgramInfo& p = model.coreml();
    absl::FPrintF(out, "  ML Program, specification version %d, opset %s, function(s) %s, %d ops (%d compute)\n",
                  p.specification_version(), p.opset(), absl::StrJoin(p.functions(), ", "), p.op_count(),
                  p.compute_op_count());
    for (const auto* features : {&p.inputs(), &p.outputs()}) {
      for (const v1::CoreMlFeature& f : *features) {
        absl::FPrintF(out, "  %s %s %s [%s]\n", features == &p.inputs() ? "input " : "output", f.name(), f.dtype(),
                      absl::StrJoin(f.shape(), ", "));
      }
    }
    absl::FPrintF(out, "  weights: %s stored, %s dense\n", HumanBytes(p.stored_bytes()), HumanBytes(p.dense_bytes()));
    for (const v1::CoreMlWeight& w : p.weights()) {
      absl::FPrintF(out, "  %-40s %-32s %-12s %2d bits  %10s stored  %10s dense  -> %s\n", w.name(), w.compression(),
                    w.stored_dtypes(), w.bits(), HumanBytes(w.stored_bytes()), HumanBytes(w.dense_bytes()),
                    w.first_consumer());
    }
    return;
  }
  for (const v1::TensorDescriptor& t : model.tensors()) {
    absl::FPrintF(out, "  %-56s %-5s [%s] %s  %s%s\n", t.name(), t.dtype(), absl::StrJoin(t.shape(), ", "),
                  HumanBytes(t.size_bytes()), t.file(), t.quantization().empty() ? "" : "  (" + t.quantization() + ")");
  }
}

int ReportRpcError(const grpc::Status& status) {
  std::string detail;
  google::rpc::Status rich;
  if (!status.error_details().empty() && rich.ParseFromString(status.error_details())) {
    for (const auto& any : rich.details()) {
      google::rpc::ErrorInfo info;
      if (!any.UnpackTo(&info)) continue;
      detail = info.reason();
      for (const auto& [key, value] : info.metadata()) absl::StrAppend(&detail, ", ", key, "=", value);
    }
  }
  const std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE && detail.empty()) {
    absl::FPrintF(stderr, "error: cannot reach the server: %s\n", status.error_message());
    return kExitFailure;
  }
  absl::FPrintF(stderr, "error: %s%s: %s\n", code, detail.empty() ? "" : absl::StrCat(" (", detail, ")"),
                status.error_message());
  return IsInvalidInputCode(status.error_code()) ? kExitInvalidInput : kExitFailure;
}

int ReportError(const absl::Status& status) {
  std::string detail = ReasonOf(status);
  for (const auto& [key, value] : ContextOf(status)) absl::StrAppend(&detail, ", ", key, "=", value);
  absl::FPrintF(stderr, "error: %s (%s): %s\n", absl::StatusCodeToString(status.code()), detail, status.message());
  return IsInvalidInputCode(static_cast<int>(status.code())) ? kExitInvalidInput : kExitFailure;
}

ProgressView::ProgressView(FILE* out) : out_(out), terminal_(isatty(fileno(out)) != 0) {}

ProgressView::~ProgressView() { Finish(); }

void ProgressView::Finish() {
  if (bar_drawn_) {
    std::fputc('\n', out_);
    bar_drawn_ = false;
  }
  std::fflush(out_);
}

void ProgressView::DrawBar(const v1::Progress& p) {
  constexpr int kWidth = 30;
  const double fraction = p.bytes_total() > 0 ? std::min(1.0, double(p.bytes_done()) / p.bytes_total()) : 0;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar(filled, '=');
  if (filled < kWidth) bar += '>';
  bar.resize(kWidth, ' ');
  absl::FPrintF(out_, "\r\033[K[%s] %s", bar, ProgressText(p));
  std::fflush(out_);
  bar_drawn_ = true;
}

void ProgressView::OnEvent(const v1::JobEvent& event) {
  switch (event.event_case()) {
    case v1::JobEvent::kProgress:
      if (terminal_) {
        DrawBar(event.progress());
      } else if (NowSeconds() - last_plain_line_ >= 2) {
        last_plain_line_ = NowSeconds();
        absl::FPrintF(out_, "progress %s\n", ProgressText(event.progress()));
      }
      return;
    case v1::JobEvent::kStateChange: {
      Finish();
      const v1::StateChange& change = event.state_change();
      absl::FPrintF(out_, "state %s (attempt %d)%s\n", StateName(change.state()), change.attempt(),
                    change.message().empty() ? "" : absl::StrCat(": ", change.message()));
      return;
    }
    case v1::JobEvent::kWarning:
      Finish();
      absl::FPrintF(out_, "warning %s: %s\n", event.warning().code(), event.warning().message());
      return;
    case v1::JobEvent::kLog:
      Finish();
      absl::FPrintF(out_, "log %s\n", event.log().message());
      return;
    default: return;
  }
}

}  // namespace modelsmith::cli
