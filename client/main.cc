// modelsmith: the operator's CLI. Talks to modelsmithd over gRPC (--server, default
// 127.0.0.1:50051, or MODELSMITH_SERVER), or runs one job in-process with `run`.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "client/remote_commands.h"
#include "client/render.h"
#include "client/run_command.h"

namespace modelsmith::cli {
namespace {

// The server resolves relative paths against its own directory; the person typing means theirs.
std::string AbsoluteIfLocalPath(const std::string& uri) {
  if (uri.empty() || uri.front() == '/' || uri.find("://") != std::string::npos) return uri;
  return (std::filesystem::current_path() / uri).lexically_normal().string();
}

v1::JobState ParseState(const std::string& name) {
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;
  if (!name.empty()) v1::JobState_Parse("JOB_STATE_" + name, &state);
  return state;
}

v1::JobKind ParseKind(const std::string& name) {
  v1::JobKind kind = v1::JOB_KIND_UNSPECIFIED;
  if (!name.empty()) v1::JobKind_Parse("JOB_KIND_" + name, &kind);
  return kind;
}

// --component NAME (repeatable) and --component-option NAME:KEY=VALUE, for a diffusers pipeline
// input; every submit command takes them.
struct PipelineFlags {
  std::vector<std::string> components, options;
  std::string input_variant;
};

std::shared_ptr<PipelineFlags> AddPipelineFlags(CLI::App* command) {
  auto flags = std::make_shared<PipelineFlags>();
  command->add_option("--component", flags->components,
                      "diffusers pipeline input: process this component (repeatable; default every one with weights)");
  command->add_option("--component-option", flags->options,
                      "diffusers pipeline input: NAME:KEY=VALUE sets this job's option KEY (its JSON field name, e.g. "
                      "scheme) for component NAME only (repeatable)");
  command->add_option("--input-variant", flags->input_variant,
                      "diffusers pipeline input: read each component's weights of this variant (e.g. fp16; default "
                      "the plain files)");
  return flags;
}

// False (after printing why) when a --component-option is not NAME:KEY=VALUE.
bool ApplyPipelineFlags(const PipelineFlags& flags, v1::JobSpec& spec) {
  for (const std::string& name : flags.components) spec.add_components(name);
  spec.set_input_variant(flags.input_variant);
  for (const std::string& option : flags.options) {
    const size_t colon = option.find(':');
    const size_t eq = option.find('=', colon == std::string::npos ? 0 : colon);
    if (colon == std::string::npos || colon == 0 || eq == std::string::npos || eq == colon + 1) {
      std::fprintf(stderr, "error: --component-option '%s' is not NAME:KEY=VALUE\n", option.c_str());
      return false;
    }
    (*(*spec.mutable_component_options())[option.substr(0, colon)]
          .mutable_options())[option.substr(colon + 1, eq - colon - 1)] = option.substr(eq + 1);
  }
  return true;
}

// submit convert: a checkpoint to safetensors with dtype, names and sharding.
void AddConvertCommand(CLI::App* submit, RemoteOptions& remote, int& exit_code) {
  CLI::App* convert = submit->add_subcommand(
      "convert", "convert a checkpoint: torch/safetensors/GGUF to safetensors, or a Llama-family checkpoint to GGUF");
  struct Options {
    v1::SubmitJobRequest request;
    std::string input, output, to, dtype, variant, max_size, strategy = "hf_greedy", stem, request_id, tokenizer_pre;
    std::vector<std::string> keep, rename;
    bool overwrite = false, watch = false;
  };
  auto options = std::make_shared<Options>();
  convert
      ->add_option("--input", options->input,
                   "pytorch_model.bin (.pt/.pth/.ckpt), a .bin or safetensors index, a Llama-family .gguf, a directory")
      ->required();
  convert->add_option("--output", options->output, "output directory")->required();
  convert->add_option("--to", options->to, "target format")->check(CLI::IsMember({"safetensors", "gguf"}))->required();
  convert->add_option("--dtype", options->dtype,
                      "safetensors: cast float tensors to f32 f16 bf16 f8_e4m3 f8_e5m2 (default: keep); gguf: f32 f16 "
                      "bf16 or a GGUF type such as Q8_0");
  convert->add_option("--keep", options->keep, "tensors matching this regex keep their dtype (repeatable)");
  convert->add_option("--rename", options->rename, "REGEX=REPLACEMENT on whole names, applied in order (repeatable)");
  convert->add_option("--variant", options->variant, "name variant, e.g. fp16 (model.fp16.safetensors)");
  convert->add_option("--max-shard-size", options->max_size,
                      "reshard: e.g. 5GB; default one output file per input file");
  convert->add_option("--strategy", options->strategy, "hf_greedy or balanced")
      ->check(CLI::IsMember({"hf_greedy", "balanced"}))
      ->capture_default_str();
  convert->add_option("--stem", options->stem, "output file stem (default from the input: pytorch_model -> model)");
  convert->add_option("--tokenizer-pre", options->tokenizer_pre,
                      "GGUF: llama.cpp's pre-tokenizer name to write (llama-bpe, qwen2, tekken, ...) when "
                      "tokenizer.json's is not recognised");
  convert->add_flag("--overwrite", options->overwrite, "replace files already at the output");
  convert->add_option("--request-id", options->request_id, "idempotency key: resubmitting returns the same job");
  convert->add_flag("--watch", options->watch, "follow the job; exit 0 only if it succeeds");
  auto convert_pipeline = AddPipelineFlags(convert);
  convert->callback([options, convert_pipeline, &remote, &exit_code] {
    v1::ConvertSpec& spec = *options->request.mutable_spec()->mutable_convert();
    spec.set_input(AbsoluteIfLocalPath(options->input));
    spec.set_output(AbsoluteIfLocalPath(options->output));
    spec.set_target_format(options->to == "gguf" ? v1::TARGET_FORMAT_GGUF : v1::TARGET_FORMAT_SAFETENSORS);
    spec.set_dtype(options->dtype);
    for (const std::string& k : options->keep) spec.add_keep(k);
    for (const std::string& rule : options->rename) {
      const size_t eq = rule.rfind('=');  // a regex may hold '=' ((?=...)); a replacement rarely does
      if (eq == std::string::npos || eq == 0) {
        std::fprintf(stderr, "error: --rename '%s' is not REGEX=REPLACEMENT\n", rule.c_str());
        exit_code = kExitInvalidInput;
        return;
      }
      v1::RenameRule* r = spec.add_rename();
      r->set_pattern(rule.substr(0, eq));
      r->set_replacement(rule.substr(eq + 1));
    }
    spec.set_variant(options->variant);
    spec.set_max_shard_size(options->max_size);
    spec.set_strategy(options->strategy == "balanced" ? v1::SHARD_STRATEGY_BALANCED : v1::SHARD_STRATEGY_HF_GREEDY);
    spec.set_stem(options->stem);
    spec.set_tokenizer_pre(options->tokenizer_pre);
    spec.set_overwrite(options->overwrite);
    options->request.set_request_id(options->request_id);
    if (!ApplyPipelineFlags(*convert_pipeline, *options->request.mutable_spec())) {
      exit_code = kExitInvalidInput;
      return;
    }
    exit_code = SubmitCommand(remote, options->request, options->watch);
  });
}

// "URI" or "URI:STRENGTH": the text after the last ':' is a strength when it is a whole number
// (so "s3://bucket/adapter" keeps its scheme). False when the strength is not finite.
bool ParseAdapterArgument(const std::string& argument, v1::LoraAdapter* adapter) {
  const size_t colon = argument.rfind(':');
  adapter->set_uri(argument);
  if (colon == std::string::npos || colon + 1 == argument.size()) return true;
  const std::string tail = argument.substr(colon + 1);
  char* end = nullptr;
  const double strength = std::strtod(tail.c_str(), &end);
  if (end != tail.c_str() + tail.size()) return true;  // not a number: part of the uri
  if (!std::isfinite(strength)) return false;
  adapter->set_uri(argument.substr(0, colon));
  adapter->set_strength(strength);
  return true;
}

// submit lora-merge: adapters merged into a base, written back in the base's format.
void AddLoraMergeCommand(CLI::App* submit, RemoteOptions& remote, int& exit_code) {
  CLI::App* merge = submit->add_subcommand(
      "lora-merge", "merge LoRA adapters (PEFT, kohya, diffusers) into a safetensors, PyTorch or GGUF base");
  struct Options {
    v1::SubmitJobRequest request;
    std::string base, output, policy = "requantize", dequantize_dtype, request_id;
    std::vector<std::string> adapters;
    bool allow_partial = false, overwrite = false, watch = false;
  };
  auto options = std::make_shared<Options>();
  merge
      ->add_option("--base", options->base,
                   "safetensors or PyTorch .bin file, index.json or directory, or a .gguf file")
      ->required();
  merge
      ->add_option(
          "--adapter", options->adapters,
          "ADAPTER[:STRENGTH]: a PEFT directory or a kohya/diffusers .safetensors file; repeatable, applied in order")
      ->required();
  merge
      ->add_option("--output", options->output, "output directory (safetensors or .bin base) or .gguf file (GGUF base)")
      ->required();
  merge->add_option("--policy", options->policy, "quantized bases: requantize (same type) or dequantize")
      ->check(CLI::IsMember({"requantize", "dequantize"}))
      ->capture_default_str();
  merge
      ->add_option("--dequantize-dtype", options->dequantize_dtype,
                   "policy dequantize: f16, bf16 or f32 (default: the weight's type before quantization, else f16)")
      ->check(CLI::IsMember({"f16", "bf16", "f32"}));
  merge->add_flag("--allow-partial", options->allow_partial,
                  "leave out adapter keys that match no base weight (each a warning)");
  merge->add_flag("--overwrite", options->overwrite, "replace files already at the output");
  merge->add_option("--request-id", options->request_id, "idempotency key: resubmitting returns the same job");
  merge->add_flag("--watch", options->watch, "follow the job; exit 0 only if it succeeds");
  auto merge_pipeline = AddPipelineFlags(merge);
  merge->callback([options, merge_pipeline, &remote, &exit_code] {
    v1::LoraMergeSpec& spec = *options->request.mutable_spec()->mutable_lora_merge();
    spec.set_base(AbsoluteIfLocalPath(options->base));
    spec.set_output(AbsoluteIfLocalPath(options->output));
    for (const std::string& argument : options->adapters) {
      v1::LoraAdapter* adapter = spec.add_adapters();
      if (!ParseAdapterArgument(argument, adapter)) {
        std::fprintf(stderr, "error: --adapter '%s': the strength must be a finite number\n", argument.c_str());
        exit_code = kExitInvalidInput;
        return;
      }
      adapter->set_uri(AbsoluteIfLocalPath(adapter->uri()));
    }
    spec.set_policy(options->policy == "dequantize" ? v1::QUANTIZED_BASE_POLICY_DEQUANTIZE
                                                    : v1::QUANTIZED_BASE_POLICY_REQUANTIZE);
    spec.set_dequantize_dtype(options->dequantize_dtype);
    spec.set_allow_partial(options->allow_partial);
    spec.set_overwrite(options->overwrite);
    options->request.set_request_id(options->request_id);
    if (!ApplyPipelineFlags(*merge_pipeline, *options->request.mutable_spec())) {
      exit_code = kExitInvalidInput;
      return;
    }
    exit_code = SubmitCommand(remote, options->request, options->watch);
  });
}

// submit bisect: a checkpoint, ONNX graph or Core ML program split into N chunks of balanced
// stored size, in execution order.
void AddBisectCommand(CLI::App* submit, RemoteOptions& remote, int& exit_code) {
  CLI::App* bisect = submit->add_subcommand(
      "bisect",
      "split a safetensors, PyTorch or GGUF checkpoint, an ONNX graph or a Core ML .mlpackage into N balanced "
      "chunks in execution order");
  struct Options {
    v1::SubmitJobRequest request;
    std::string input, output, granularity = "block", request_id;
    uint32_t chunks = 2;
    bool overwrite = false, watch = false, pipeline = false;
  };
  auto options = std::make_shared<Options>();
  bisect
      ->add_option("--input", options->input,
                   "safetensors or PyTorch .bin file, index.json or directory, a .gguf, .onnx or .mlpackage")
      ->required();
  bisect->add_option("--output", options->output, "output directory: the chunks, <stem>.chunks.json and the manifest")
      ->required();
  bisect->add_option("--chunks", options->chunks, "number of chunks")->check(CLI::Range(2, 256))->capture_default_str();
  bisect->add_option("--granularity", options->granularity, "cut between whole blocks, modules or single tensors")
      ->check(CLI::IsMember({"block", "module", "tensor"}))
      ->capture_default_str();
  bisect->add_flag("--pipeline", options->pipeline,
                   "Core ML only: one .mlpackage whose model is a pipeline of the chunks (as coremltools' "
                   "merge_chunks_to_pipeline)");
  bisect->add_flag("--overwrite", options->overwrite, "replace files already at the output");
  bisect->add_option("--request-id", options->request_id, "idempotency key: resubmitting returns the same job");
  bisect->add_flag("--watch", options->watch, "follow the job; exit 0 only if it succeeds");
  auto bisect_pipeline = AddPipelineFlags(bisect);
  bisect->callback([options, bisect_pipeline, &remote, &exit_code] {
    v1::BisectSpec& spec = *options->request.mutable_spec()->mutable_bisect();
    spec.set_input(AbsoluteIfLocalPath(options->input));
    spec.set_output(AbsoluteIfLocalPath(options->output));
    spec.set_chunks(options->chunks);
    spec.set_granularity(options->granularity == "tensor"   ? v1::BISECT_GRANULARITY_TENSOR
                         : options->granularity == "module" ? v1::BISECT_GRANULARITY_MODULE
                                                            : v1::BISECT_GRANULARITY_BLOCK);
    spec.set_overwrite(options->overwrite);
    spec.set_pipeline(options->pipeline);
    options->request.set_request_id(options->request_id);
    if (!ApplyPipelineFlags(*bisect_pipeline, *options->request.mutable_spec())) {
      exit_code = kExitInvalidInput;
      return;
    }
    exit_code = SubmitCommand(remote, options->request, options->watch);
  });
}

int Main(int argc, char** argv) {
  CLI::App app{"modelsmith: submit, watch and inspect Modelsmith jobs"};
  app.require_subcommand(1);
  RemoteOptions remote;
  app.add_option("--server", remote.server, "modelsmithd address HOST:PORT")
      ->envname("MODELSMITH_SERVER")
      ->capture_default_str();
  app.add_flag("--json", remote.json, "machine-readable JSON output");
  app.add_option("--tls-ca", remote.tls_ca_file, "PEM CA bundle to verify the server with (turns TLS on)")
      ->envname("MODELSMITH_TLS_CA");
  CLI::Option* tls_cert = app.add_option("--tls-cert", remote.tls_cert_file, "PEM client certificate (mutual TLS)")
                              ->envname("MODELSMITH_CLIENT_TLS_CERT");
  CLI::Option* tls_key = app.add_option("--tls-key", remote.tls_key_file, "PEM private key of --tls-cert")
                             ->envname("MODELSMITH_CLIENT_TLS_KEY");
  tls_cert->needs(tls_key);
  std::string token_file;
  app.add_option("--token-file", token_file, "file holding a bearer token for an authenticating server")
      ->envname("MODELSMITH_TOKEN_FILE");
  // A token set in the environment is used when no file is given (never put it on a command line).
  app.parse_complete_callback([&] {
    if (!token_file.empty()) {
      std::ifstream in(token_file, std::ios::binary);
      if (!in) throw CLI::ValidationError("--token-file", "'" + token_file + "' cannot be read");
      std::stringstream text;
      text << in.rdbuf();
      remote.token = std::string(absl::StripAsciiWhitespace(text.str()));
    } else if (const char* token = std::getenv("MODELSMITH_TOKEN"); token != nullptr) {
      remote.token = std::string(absl::StripAsciiWhitespace(token));
    }
  });
  tls_key->needs(tls_cert);
  int exit_code = kExitOk;

  // submit shard
  CLI::App* submit = app.add_subcommand("submit", "submit a job");
  submit->require_subcommand(1);
  CLI::App* shard = submit->add_subcommand("shard", "reshard a safetensors checkpoint");
  v1::SubmitJobRequest shard_request;
  v1::ShardSpec& spec = *shard_request.mutable_spec()->mutable_shard();
  std::string input, output, max_size, strategy = "hf_greedy", variant, stem, request_id;
  bool overwrite = false, watch = false;
  shard->add_option("--input", input, "safetensors file, index.json, or directory")->required();
  shard->add_option("--output", output, "output directory")->required();
  shard->add_option("--max-shard-size", max_size, "e.g. 5GB (10^9), 5GiB (2^30), bytes, or 0 for one file")->required();
  shard->add_option("--strategy", strategy, "hf_greedy or balanced")
      ->check(CLI::IsMember({"hf_greedy", "balanced"}))
      ->capture_default_str();
  shard->add_option("--variant", variant, "name variant, e.g. fp16");
  shard->add_option("--stem", stem, "file stem (default model; diffusion_pytorch_model for diffusers)");
  shard->add_flag("--overwrite", overwrite, "replace files already at the output");
  shard->add_option("--request-id", request_id, "idempotency key: resubmitting returns the same job");
  shard->add_flag("--watch", watch, "follow the job; exit 0 only if it succeeds");
  auto shard_pipeline = AddPipelineFlags(shard);
  shard->callback([&] {
    spec.set_input(AbsoluteIfLocalPath(input));
    spec.set_output(AbsoluteIfLocalPath(output));
    spec.set_max_shard_size(max_size);
    spec.set_strategy(strategy == "balanced" ? v1::SHARD_STRATEGY_BALANCED : v1::SHARD_STRATEGY_HF_GREEDY);
    spec.set_variant(variant);
    spec.set_stem(stem);
    spec.set_overwrite(overwrite);
    shard_request.set_request_id(request_id);
    if (!ApplyPipelineFlags(*shard_pipeline, *shard_request.mutable_spec())) {
      exit_code = kExitInvalidInput;
      return;
    }
    exit_code = SubmitCommand(remote, shard_request, watch);
  });

  AddConvertCommand(submit, remote, exit_code);
  AddLoraMergeCommand(submit, remote, exit_code);
  AddBisectCommand(submit, remote, exit_code);

  CLI::App* quantize =
      submit->add_subcommand("quantize", "quantize a model to a GGUF type or a bitsandbytes / quanto / ChatGLM layout");
  v1::SubmitJobRequest quantize_request;
  v1::QuantizeSpec& qspec = *quantize_request.mutable_spec()->mutable_quantize();
  std::string q_input, q_output, q_scheme, q_request_id, q_max_split, q_imatrix, q_output_type, q_embedding_type;
  std::vector<std::string> q_tensor_types, q_include, q_exclude;
  bool q_allow_requantize = false, q_strict = false, q_overwrite = false, q_watch = false, q_pure = false,
       q_leave_output = false;
  uint64_t q_min_elements = 0;
  uint32_t q_block_size = 0, q_group_size = 0;
  bool q_double_quant = false;
  double q_snr_warning = 0;
  quantize->add_option("--input", q_input, "safetensors file, index.json, directory, or .gguf")->required();
  quantize->add_option("--output", q_output, "a .gguf file for GGUF types, a directory for layouts")->required();
  quantize
      ->add_option("--scheme", q_scheme,
                   "a llama-quantize ftype (Q4_K_M, Q6_K, IQ4_XS, Q8_0, ... with its per-tensor types), or "
                   "bnb_int8 bnb_nf4 bnb_fp4 quanto_int8 quanto_int4 chatglm_int8 chatglm_int4")
      ->required();
  quantize->add_option("--block-size", q_block_size, "bnb_nf4/bnb_fp4 block size, 32..4096 (default 64)");
  quantize->add_flag("--double-quant", q_double_quant, "bnb_nf4/bnb_fp4: quantize the absmax values too");
  quantize->add_option("--group-size", q_group_size, "quanto_int4 group size (default as quanto: 128, 96, 64, 32)");
  quantize->add_option("--max-split-size", q_max_split, "GGUF: write parts of at most SIZE (OUT-00001-of-0000N.gguf)");
  quantize->add_flag("--pure", q_pure, "GGUF: every weight the scheme's base type (no per-tensor rules)");
  quantize->add_option("--imatrix", q_imatrix, "GGUF: importance matrix from llama-imatrix (.dat or .gguf)");
  quantize->add_option("--output-tensor-type", q_output_type, "GGUF: the type of output.weight");
  quantize->add_option("--token-embedding-type", q_embedding_type, "GGUF: the type of token_embd.weight");
  quantize->add_flag("--leave-output-tensor", q_leave_output, "GGUF: do not quantize output.weight");
  quantize->add_option("--tensor-type", q_tensor_types, "REGEX=TYPE: tensors matching REGEX get TYPE (repeatable)");
  quantize->add_option("--include", q_include, "quantize only tensors matching these regexes");
  quantize->add_option("--exclude", q_exclude, "keep tensors matching these regexes");
  quantize->add_option("--min-elements", q_min_elements, "keep tensors with fewer elements");
  quantize->add_option("--snr-warning-db", q_snr_warning, "warn for tensors under this SNR (default 10)");
  quantize->add_flag("--allow-requantize", q_allow_requantize, "dequantize and quantize an already quantized input");
  quantize->add_flag("--strict", q_strict, "fail on tensors that cannot take the type instead of keeping them");
  quantize->add_flag("--overwrite", q_overwrite, "replace an existing output");
  quantize->add_option("--request-id", q_request_id, "idempotency key: resubmitting returns the same job");
  quantize->add_flag("--watch", q_watch, "follow the job; exit 0 only if it succeeds");
  auto quantize_pipeline = AddPipelineFlags(quantize);
  quantize->callback([&] {
    qspec.set_input(AbsoluteIfLocalPath(q_input));
    qspec.set_output(AbsoluteIfLocalPath(q_output));
    qspec.set_scheme(q_scheme);
    for (const std::string& rule : q_tensor_types) {
      const size_t eq = rule.rfind('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == rule.size()) {
        std::fprintf(stderr, "error: --tensor-type '%s' is not REGEX=TYPE\n", rule.c_str());
        exit_code = kExitInvalidInput;
        return;
      }
      auto* override_rule = qspec.add_tensor_types();
      override_rule->set_pattern(rule.substr(0, eq));
      override_rule->set_type(rule.substr(eq + 1));
    }
    for (const std::string& r : q_include) qspec.add_include(r);
    for (const std::string& r : q_exclude) qspec.add_exclude(r);
    qspec.set_min_elements(q_min_elements);
    qspec.set_block_size(q_block_size);
    qspec.set_double_quant(q_double_quant);
    qspec.set_group_size(q_group_size);
    qspec.set_max_split_size(q_max_split);
    qspec.set_pure(q_pure);
    if (!q_imatrix.empty()) qspec.set_imatrix(AbsoluteIfLocalPath(q_imatrix));
    qspec.set_output_tensor_type(q_output_type);
    qspec.set_token_embedding_type(q_embedding_type);
    qspec.set_leave_output_tensor(q_leave_output);
    qspec.set_snr_warning_db(q_snr_warning);
    qspec.set_allow_requantize(q_allow_requantize);
    qspec.set_strict(q_strict);
    qspec.set_overwrite(q_overwrite);
    quantize_request.set_request_id(q_request_id);
    if (!ApplyPipelineFlags(*quantize_pipeline, *quantize_request.mutable_spec())) {
      exit_code = kExitInvalidInput;
      return;
    }
    exit_code = SubmitCommand(remote, quantize_request, q_watch);
  });

  std::string job_id;
  CLI::App* watch_cmd = app.add_subcommand("watch", "follow a job until it ends (exit 0 if it succeeded)");
  watch_cmd->add_option("job", job_id, "job id")->required();
  watch_cmd->callback([&] { exit_code = WatchCommand(remote, job_id); });

  CLI::App* get = app.add_subcommand("get", "show a job");
  get->add_option("job", job_id, "job id")->required();
  get->callback([&] { exit_code = GetCommand(remote, job_id); });

  CLI::App* cancel = app.add_subcommand("cancel", "cancel a queued or running job");
  cancel->add_option("job", job_id, "job id")->required();
  cancel->callback([&] { exit_code = CancelCommand(remote, job_id); });

  CLI::App* list = app.add_subcommand("list", "list jobs, newest first");
  std::string state, kind, page_token;
  int page_size = 0;
  bool all = false;
  list->add_option("--state", state, "QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED")
      ->check(CLI::IsMember({"QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"}, CLI::ignore_case));
  list->add_option("--kind", kind, "SHARD, CONVERT, QUANTIZE, BISECT or LORA_MERGE")
      ->check(CLI::IsMember({"SHARD", "CONVERT", "QUANTIZE", "BISECT", "LORA_MERGE"}, CLI::ignore_case));
  list->add_option("--page-size", page_size, "jobs per page (default 50, at most 1000)");
  list->add_option("--page-token", page_token, "token printed by a previous page");
  list->add_flag("--all", all, "fetch every page");
  list->callback([&] {
    v1::ListJobsRequest request;
    for (auto* s : {&state, &kind})
      for (char& c : *s) c = static_cast<char>(std::toupper(c));
    request.set_state(ParseState(state));
    request.set_kind(ParseKind(kind));
    request.set_page_size(page_size);
    request.set_page_token(page_token);
    exit_code = ListCommand(remote, request, all);
  });

  CLI::App* inspect = app.add_subcommand("inspect", "describe a checkpoint (through the server)");
  std::string uri;
  inspect->add_option("uri", uri, "path, file:// or s3:// uri")->required();
  inspect->callback([&] { exit_code = InspectCommand(remote, AbsoluteIfLocalPath(uri)); });

  CLI::App* run = app.add_subcommand("run", "run one job in this process, without a server");
  std::string spec_path;
  run->add_option("--spec", spec_path, "JobSpec as JSON (a file, or - for stdin)")->required();
  run->callback([&] { exit_code = RunCommand(spec_path, remote.json); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitInvalidInput;
  }
  return exit_code;
}

}  // namespace
}  // namespace modelsmith::cli

int main(int argc, char** argv) { return modelsmith::cli::Main(argc, argv); }
