// Diffusers pipelines through the real modelsmithd and CLI: tiny pipelines with the real layout
// (tests/tools/make_diffusers_pipeline.py: SD-like, Kolors-like with a ChatGLM text encoder,
// Flux-like with sharded transformer and T5 encoder) converted to an fp16 variant, resharded,
// written one file per component, quantized per component (ChatGLM int4, bitsandbytes NF4 with its
// quantization_config), LoRA-merged from one adapter with unet./text_encoder. prefixes; a failing
// component publishes nothing and a missing component folder is refused by name.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "nlohmann/json.hpp"
#include "tests/support/read_file.h"
#include "tests/support/server_test.h"
#include "workers/formats/model_view.h"
#include "workers/storage/checksum.h"
#include "workers/storage/local_object_store.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kDebianPython = "/usr/bin/python3";  // has numpy

// Every file below `dir`, relative, sorted.
std::set<std::string> FilesUnder(const std::string& dir) {
  std::set<std::string> files;
  if (!fs::exists(dir)) return files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) files.insert(fs::relative(e.path(), dir).string());
  }
  return files;
}

class PipelineTest : public ServerTest {
 protected:
  std::string Make(const std::string& kind) {
    const std::string dir = data_ + "/" + kind;
    CommandResult made =
        RunCommand({kDebianPython, SourceDir() + "/tests/tools/make_diffusers_pipeline.py", dir, "--kind", kind});
    EXPECT_EQ(made.exit_code, 0) << made.err;
    return dir;
  }

  // The tensors of the checkpoint in `dir` (a component folder), by name: dtype and bytes.
  std::map<std::string, std::pair<DType, std::string>> Tensors(const std::string& dir) {
    LocalObjectStore store;
    absl::StatusOr<ModelView> model = OpenModel(Location{&store, dir});
    EXPECT_TRUE(model.ok()) << dir << ": " << model.status();
    std::map<std::string, std::pair<DType, std::string>> out;
    if (!model.ok()) return out;
    for (const TensorInfo& t : model->tensors) {
      std::string bytes(t.size_bytes, '\0');
      EXPECT_TRUE(model->files[t.file_index]
                      .object->ReadAt(t.data_offset, t.size_bytes, reinterpret_cast<std::byte*>(bytes.data()))
                      .ok());
      out[t.name] = {t.dtype, std::move(bytes)};
    }
    return out;
  }

  // The manifest lists every file of the output but itself, each with the SHA-256 of its bytes.
  void ExpectManifestListsEveryFile(const std::string& out) {
    const json manifest = json::parse(ReadFile(out + "/modelsmith.manifest.json"));
    std::set<std::string> listed;
    for (const json& a : manifest["artifacts"]) {
      const std::string name = a["name"];
      listed.insert(name);
      EXPECT_EQ(a["sha256"], Sha256Hex(ReadFile(out + "/" + name))) << name;
    }
    std::set<std::string> files = FilesUnder(out);
    files.erase("modelsmith.manifest.json");
    EXPECT_EQ(listed, files);
  }

  // `a` and `b` hold the same file, byte for byte.
  static void ExpectSameFile(const std::string& a, const std::string& b) {
    ASSERT_TRUE(fs::exists(b)) << b;
    EXPECT_TRUE(ReadFile(a) == ReadFile(b)) << a << " vs " << b;
  }
};

TEST_F(PipelineTest, Fp16VariantOfAWholePipeline) {
  const std::string sd = Make("sd");
  Start();
  const std::string out = data_ + "/sd-fp16";
  CommandResult run = Cli({"submit", "convert", "--input", sd, "--output", out, "--to", "safetensors", "--dtype", "f16",
                           "--variant", "fp16", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("component 1/3 unet"), std::string::npos) << "progress names the component";
  EXPECT_NE(run.out.find("component text_encoder:"), std::string::npos) << "figures per component";
  const std::set<std::string> expected = {"model_index.json",
                                          "modelsmith.manifest.json",
                                          "scheduler/scheduler_config.json",
                                          "text_encoder/config.json",
                                          "text_encoder/model.fp16.safetensors",
                                          "tokenizer/merges.txt",
                                          "tokenizer/special_tokens_map.json",
                                          "tokenizer/tokenizer_config.json",
                                          "tokenizer/vocab.json",
                                          "unet/config.json",
                                          "unet/diffusion_pytorch_model.fp16.safetensors",
                                          "vae/config.json",
                                          "vae/diffusion_pytorch_model.fp16.safetensors"};
  EXPECT_EQ(FilesUnder(out), expected);
  for (const std::string& same : expected) {
    if (same.find("safetensors") == std::string::npos && same != "modelsmith.manifest.json")
      ExpectSameFile(sd + "/" + same, out + "/" + same);
  }
  // Every weight is the input's, cast to F16.
  for (const std::string& component : {"unet", "text_encoder", "vae"}) {
    auto in = Tensors(sd + "/" + component), converted = Tensors(out + "/" + component);
    ASSERT_EQ(in.size(), converted.size()) << component;
    for (const auto& [name, tensor] : converted) {
      EXPECT_EQ(tensor.first, DType::kF16) << name;
      EXPECT_EQ(tensor.second.size() * 2, in[name].second.size()) << name;
    }
  }
  ExpectManifestListsEveryFile(out);
  const json manifest = json::parse(ReadFile(out + "/modelsmith.manifest.json"));
  EXPECT_EQ(manifest["pipeline"]["class"], "StableDiffusionPipeline");
  EXPECT_EQ(manifest["pipeline"]["components"].size(), 5u);  // unet, vae, scheduler, text_encoder, tokenizer

  // InspectModel on the pipeline: each component's format, dtype, size and quantization.
  CommandResult inspect = Cli({"--json", "inspect", out});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  const json info = json::parse(inspect.out);
  EXPECT_EQ(info["format"], "diffusers-pipeline");
  EXPECT_EQ(info["architecture"], "StableDiffusionPipeline");
  std::map<std::string, json> components;
  for (const json& c : info["components"]) components[c["name"]] = c;
  EXPECT_EQ(components["unet"].value("format", ""), "safetensors");
  EXPECT_EQ(components["unet"].value("dtypes", json()), json::array({"F16"}));
  EXPECT_EQ(components["text_encoder"]["class_name"], "CLIPTextModel");
  EXPECT_FALSE(components["scheduler"].contains("format"));
}

TEST_F(PipelineTest, ReshardEveryComponentAtTheDefaultAndAtASmallLimitAndAsSingleFiles) {
  const std::string flux = Make("flux");
  Start();
  struct Case {
    std::string limit;
    std::set<std::string> transformer_files;
  };
  const std::string out_default = data_ + "/flux-default", out_small = data_ + "/flux-small",
                    out_single = data_ + "/flux-single";
  for (const auto& [limit, out] : std::vector<std::pair<std::string, std::string>>{
           {"hf_default", out_default}, {"100KB", out_small}, {"0", out_single}}) {
    CommandResult run =
        Cli({"submit", "shard", "--input", flux, "--output", out, "--max-shard-size", limit, "--watch"});
    ASSERT_EQ(run.exit_code, 0) << limit << ": " << run.out << run.err;
    for (const std::string& component : {"transformer", "text_encoder", "text_encoder_2", "vae"}) {
      auto in = Tensors(flux + "/" + component), resharded = Tensors(out + "/" + component);
      EXPECT_EQ(in, resharded) << limit << " " << component;
    }
    ExpectSameFile(flux + "/model_index.json", out + "/model_index.json");
    ExpectSameFile(flux + "/tokenizer_2/vocab.json", out + "/tokenizer_2/vocab.json");
    ExpectManifestListsEveryFile(out);
  }
  // 10GB: every component in one file with no index, as save_pretrained writes a small model.
  for (const std::string& single : {out_default, out_single}) {
    EXPECT_TRUE(fs::exists(single + "/transformer/diffusion_pytorch_model.safetensors"));
    EXPECT_TRUE(fs::exists(single + "/text_encoder_2/model.safetensors"));
    EXPECT_FALSE(fs::exists(single + "/transformer/diffusion_pytorch_model.safetensors.index.json"));
    EXPECT_FALSE(fs::exists(single + "/text_encoder_2/model.safetensors.index.json"));
    EXPECT_FALSE(fs::exists(single + "/transformer/diffusion_pytorch_model-00001-of-00002.safetensors"));
  }
  // 100KB: diffusers' shard names and index, every shard within the limit.
  const json index = json::parse(ReadFile(out_small + "/transformer/diffusion_pytorch_model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [tensor, file] : index["weight_map"].items()) shards.insert(file.get<std::string>());
  ASSERT_GT(shards.size(), 2u);
  for (const std::string& shard : shards) {
    EXPECT_EQ(shard.rfind("diffusion_pytorch_model-000", 0), 0u) << shard;
    EXPECT_LE(fs::file_size(out_small + "/transformer/" + shard), 100'000u + 4096u) << shard;
  }
  EXPECT_TRUE(fs::exists(out_small + "/text_encoder/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(out_small + "/text_encoder/model-00001-of-00002.safetensors"));
}

TEST_F(PipelineTest, ChatglmInt4TextEncoderOnlyAndEverythingElseByteForByte) {
  const std::string kolors = Make("kolors");
  Start();
  const std::string out = data_ + "/kolors-int4";
  CommandResult run = Cli({"submit", "quantize", "--input", kolors, "--output", out, "--scheme", "chatglm_int4",
                           "--component", "text_encoder", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  for (const std::string& same : FilesUnder(kolors)) {
    if (same.rfind("text_encoder/", 0) == 0 && same != "text_encoder/modeling_chatglm.py") continue;
    ExpectSameFile(kolors + "/" + same, out + "/" + same);
  }
  const json config = json::parse(ReadFile(out + "/text_encoder/config.json"));
  EXPECT_EQ(config["quantization_bit"], 4);
  EXPECT_EQ(config["auto_map"]["AutoModel"], "modeling_chatglm.ChatGLMModel") << "the input's config is kept";
  auto quantized = Tensors(out + "/text_encoder");
  EXPECT_EQ(quantized["transformer.encoder.layers.0.self_attention.query_key_value.weight"].first, DType::kI8);
  EXPECT_TRUE(quantized.count("transformer.encoder.layers.0.self_attention.query_key_value.weight_scale"));
  ExpectManifestListsEveryFile(out);

  CommandResult inspect = Cli({"--json", "inspect", out});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  for (const json& c : json::parse(inspect.out)["components"]) {
    if (c["name"] == "text_encoder") {
      EXPECT_EQ(c.value("quantization", ""), "chatglm_int4");
      EXPECT_EQ(c.value("declared_quantization", ""), "chatglm_int4");
    } else {
      EXPECT_FALSE(c.contains("quantization")) << c.dump();
    }
  }
}

TEST_F(PipelineTest, BnbNf4TransformerWithItsQuantizationConfigAndPerComponentOverrides) {
  const std::string flux = Make("flux");
  Start();
  const std::string out = data_ + "/flux-nf4";
  // The job's scheme is bnb_int8; the transformer's override makes it NF4 with nested absmax.
  CommandResult run =
      Cli({"submit", "quantize", "--input", flux, "--output", out, "--scheme", "bnb_int8", "--component", "transformer",
           "--component", "text_encoder_2", "--component-option", "transformer:scheme=bnb_nf4", "--component-option",
           "transformer:double_quant=true", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  // The sharded input became one quantized file; its shards and index are not carried over.
  std::set<std::string> transformer;
  for (const std::string& f : FilesUnder(out)) {
    if (f.rfind("transformer/", 0) == 0) transformer.insert(f);
  }
  EXPECT_EQ(transformer,
            (std::set<std::string>{"transformer/config.json", "transformer/diffusion_pytorch_model.safetensors"}));
  const json config = json::parse(ReadFile(out + "/transformer/config.json"));
  EXPECT_EQ(config["_class_name"], "FluxTransformer2DModel") << "the component's own config is kept";
  const json& q = config["quantization_config"];
  EXPECT_EQ(q["quant_method"], "bitsandbytes");
  EXPECT_EQ(q["load_in_4bit"], true);
  EXPECT_EQ(q["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(q["bnb_4bit_use_double_quant"], true);
  EXPECT_EQ(json::parse(ReadFile(out + "/text_encoder_2/config.json"))["quantization_config"]["load_in_8bit"], true);
  ExpectSameFile(flux + "/vae/diffusion_pytorch_model.safetensors", out + "/vae/diffusion_pytorch_model.safetensors");
  ExpectSameFile(flux + "/text_encoder/model.safetensors", out + "/text_encoder/model.safetensors");
  ExpectManifestListsEveryFile(out);

  CommandResult inspect = Cli({"inspect", out});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_NE(inspect.out.find("quantized bnb_nf4, config.json declares bitsandbytes nf4"), std::string::npos)
      << inspect.out;
  EXPECT_NE(inspect.out.find("quantized bnb_int8, config.json declares bitsandbytes int8"), std::string::npos)
      << inspect.out;
  EXPECT_EQ(inspect.out.find("MISMATCH"), std::string::npos) << inspect.out;
  // The third failure the issue names: quantized weights whose config.json says nothing.
  std::ofstream(out + "/transformer/config.json") << R"({"_class_name": "FluxTransformer2DModel"})";
  CommandResult misdetected = Cli({"inspect", out});
  EXPECT_NE(misdetected.out.find("quantized bnb_nf4 -- MISMATCH: config.json does not declare it"), std::string::npos)
      << misdetected.out;

  // Refusals name the field: an unknown component, an option the kind lacks, a fixed field, a
  // component with options that is not processed, no pipeline at all.
  struct Refusal {
    std::vector<std::string> args;
    std::string reason;
  };
  for (const Refusal& r : std::vector<Refusal>{
           {{"--component", "unet"}, "COMPONENT_UNKNOWN"},
           {{"--component", "transformer", "--component-option", "transformer:colour=blue"},
            "COMPONENT_OPTION_INVALID"},
           {{"--component", "transformer", "--component-option", "transformer:output=/tmp/x"},
            "COMPONENT_OPTION_INVALID"},
           {{"--component", "transformer", "--component-option", "vae:scheme=bnb_nf4"}, "COMPONENT_OPTION_INVALID"},
           {{"--component", "scheduler"}, "COMPONENT_HAS_NO_WEIGHTS"}}) {
    std::vector<std::string> args = {"submit",   "quantize",         "--input",  flux,
                                     "--output", data_ + "/refused", "--scheme", "bnb_int8"};
    args.insert(args.end(), r.args.begin(), r.args.end());
    CommandResult refused = Cli(args);
    EXPECT_EQ(refused.exit_code, 2) << r.reason << refused.out << refused.err;
    EXPECT_NE(refused.err.find(r.reason), std::string::npos) << refused.err;
    EXPECT_FALSE(fs::exists(data_ + "/refused"));
  }
  CommandResult not_pipeline = Cli({"submit", "quantize", "--input", flux + "/vae", "--output", data_ + "/refused",
                                    "--scheme", "bnb_int8", "--component", "vae"});
  EXPECT_NE(not_pipeline.err.find("NOT_A_PIPELINE"), std::string::npos) << not_pipeline.err;
  CommandResult gguf =
      Cli({"submit", "quantize", "--input", flux, "--output", data_ + "/refused.gguf", "--scheme", "Q4_K_M"});
  EXPECT_EQ(gguf.exit_code, 2);
  EXPECT_NE(gguf.err.find("PIPELINE_GGUF_UNSUPPORTED"), std::string::npos) << gguf.err;
}

class PipelineLoraTest : public PipelineTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(PipelineLoraTest, LoraWithMixedPrefixesGoesToTheMatchingComponents) {
  const std::string sd = Make("sd");
  const std::string lora = data_ + "/lora.safetensors";
  ASSERT_EQ(RunCommand({kDebianPython, SourceDir() + "/tests/tools/make_diffusers_pipeline.py", lora, "--lora", "sd",
                        "--style", GetParam()})
                .exit_code,
            0);
  Start();
  const std::string out = data_ + "/sd-lora";
  CommandResult run = Cli({"submit", "lora-merge", "--base", sd, "--adapter", lora, "--output", out, "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  ExpectSameFile(sd + "/vae/diffusion_pytorch_model.safetensors", out + "/vae/diffusion_pytorch_model.safetensors");
  ExpectManifestListsEveryFile(out);
  // Each module's weight is W + B A (alpha = r: scale 1), in its own component; the rest unchanged.
  const std::string check =
      "import sys, numpy as np\n"
      "sys.path.insert(0, sys.argv[1])\n"
      "import make_hf_llm as m\n"
      "lora = m.read_safetensors(sys.argv[2])\n"
      "changed = 0\n"
      "for comp, stem, kohya in (('unet', 'diffusion_pytorch_model', 'lora_unet'), ('text_encoder', 'model', "
      "'lora_te')):\n"
      "    a = m.read_safetensors(f'{sys.argv[3]}/{comp}/{stem}.safetensors')\n"
      "    b = m.read_safetensors(f'{sys.argv[4]}/{comp}/{stem}.safetensors')\n"
      "    for name in a:\n"
      "        key = comp + '.' + name[:-len('.weight')]\n"
      "        flat = kohya + '_' + name[:-len('.weight')].replace('.', '_')\n"
      "        if key + '.lora_A.weight' in lora:\n"
      "            want = a[name] + lora[key + '.lora_B.weight'] @ lora[key + '.lora_A.weight']\n"
      "            assert np.abs(b[name] - want).max() < 1e-5, name\n"
      "            changed += 1\n"
      "        elif flat + '.lora_down.weight' in lora:\n"
      "            want = a[name] + lora[flat + '.lora_up.weight'] @ lora[flat + '.lora_down.weight']\n"
      "            assert np.abs(b[name] - want).max() < 1e-5, name\n"
      "            changed += 1\n"
      "        else:\n"
      "            assert (a[name] == b[name]).all(), name\n"
      "assert changed == 4, changed\n"
      "print('merged', changed)\n";
  CommandResult merged = RunCommand({kDebianPython, "-c", check, SourceDir() + "/tests/tools", lora, sd, out});
  EXPECT_EQ(merged.exit_code, 0) << merged.out << merged.err;
}

INSTANTIATE_TEST_SUITE_P(Styles, PipelineLoraTest, ::testing::Values("diffusers", "kohya"),
                         [](const ::testing::TestParamInfo<const char*>& info) { return std::string(info.param); });

TEST_F(PipelineTest, AFailureInOneComponentPublishesNothing) {
  const std::string flux = Make("flux");
  // text_encoder_2's second shard cut short: its job fails after the transformer's succeeded.
  const std::string shard = flux + "/text_encoder_2/model-00002-of-00002.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 100);
  Start();
  const std::string out = data_ + "/flux-fp16";
  // The server finds it at submit.
  CommandResult run = Cli({"submit", "convert", "--input", flux, "--output", out, "--to", "safetensors", "--dtype",
                           "f16", "--variant", "fp16", "--watch"});
  EXPECT_EQ(run.exit_code, 2) << run.out;
  EXPECT_NE(run.err.find("component 'text_encoder_2'"), std::string::npos) << run.err;
  ExpectNothingLeftIn(out);
  // `modelsmith run` plans each component as it comes to it: the transformer and text_encoder are
  // done and staged when text_encoder_2 fails, and still nothing is published or left behind.
  const json spec = {{"convert",
                      {{"input", flux},
                       {"output", out},
                       {"target_format", "TARGET_FORMAT_SAFETENSORS"},
                       {"dtype", "f16"},
                       {"variant", "fp16"}}}};
  std::ofstream(data_ + "/spec.json") << spec.dump();
  CommandResult local = RunCommand({CliBinary(), "run", "--spec", data_ + "/spec.json"});
  EXPECT_NE(local.exit_code, 0) << local.out;
  EXPECT_NE(local.err.find("component 2/4: text_encoder"), std::string::npos) << local.err;
  EXPECT_NE(local.err.find("component 3/4: text_encoder_2"), std::string::npos) << local.err;
  EXPECT_NE(local.err.find("component 'text_encoder_2'"), std::string::npos) << local.err;
  ExpectNothingLeftIn(out);
}

// Hub repositories hold a component's weights more than once (the plain files and an fp16
// variant): a job reads the plain ones as diffusers does by default, or the variant asked for,
// and the output holds only what the job wrote.
TEST_F(PipelineTest, AComponentWithSeveralSavedCopiesIsReadAsAsked) {
  const std::string sd = data_ + "/sd";
  ASSERT_EQ(RunCommand({kDebianPython, SourceDir() + "/tests/tools/make_diffusers_pipeline.py", sd, "--kind", "sd",
                        "--fp16-copy"})
                .exit_code,
            0);
  Start();
  const std::string plain = data_ + "/plain", fp16 = data_ + "/from-fp16";
  CommandResult run =
      Cli({"submit", "shard", "--input", sd, "--output", plain, "--max-shard-size", "hf_default", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_EQ(Tensors(plain + "/unet"), Tensors(sd + "/unet/diffusion_pytorch_model.safetensors"));
  EXPECT_FALSE(fs::exists(plain + "/unet/diffusion_pytorch_model.fp16.safetensors")) << "only what the job wrote";
  run = Cli({"submit", "shard", "--input", sd, "--output", fp16, "--max-shard-size", "hf_default", "--input-variant",
             "fp16", "--variant", "fp16", "--watch"});
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_EQ(Tensors(fp16 + "/unet"), Tensors(sd + "/unet/diffusion_pytorch_model.fp16.safetensors"));
  EXPECT_TRUE(fs::exists(fp16 + "/text_encoder/model.fp16.safetensors"));
  EXPECT_FALSE(fs::exists(fp16 + "/text_encoder/model.safetensors"));

  CommandResult missing = Cli({"submit", "shard", "--input", sd, "--output", data_ + "/bf16", "--max-shard-size", "0",
                               "--input-variant", "bf16"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("COMPONENT_VARIANT_MISSING"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("(plain), fp16"), std::string::npos) << missing.err;
  // Without the plain files and with two variants, the job asks which.
  fs::remove(sd + "/vae/diffusion_pytorch_model.safetensors");
  fs::copy_file(sd + "/vae/diffusion_pytorch_model.fp16.safetensors",
                sd + "/vae/diffusion_pytorch_model.ema.safetensors");
  CommandResult ambiguous =
      Cli({"submit", "shard", "--input", sd, "--output", data_ + "/which", "--max-shard-size", "0"});
  EXPECT_EQ(ambiguous.exit_code, 2);
  EXPECT_NE(ambiguous.err.find("COMPONENT_VARIANT_AMBIGUOUS"), std::string::npos) << ambiguous.err;

  CommandResult inspect = Cli({"--json", "inspect", sd});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  for (const json& c : json::parse(inspect.out)["components"]) {
    if (c["name"] != "unet") continue;
    EXPECT_EQ(c["variants"], json::array({"", "fp16"}));
    EXPECT_EQ(c["weights"], "diffusion_pytorch_model.safetensors");
    EXPECT_EQ(c["dtypes"], json::array({"F32"}));
  }
}

TEST_F(PipelineTest, CancelInTheMiddleLeavesNothing) {
  const std::string sd = data_ + "/big";
  ASSERT_EQ(RunCommand({kDebianPython, SourceDir() + "/tests/tools/make_diffusers_pipeline.py", sd, "--kind", "sd",
                        "--big-mb", "8"})
                .exit_code,
            0);  // the unet is about 8 MiB, moved at 500 KB/s
  Start({"--job-io-limit", "500KB"});
  v1::SubmitJobRequest request;
  v1::ConvertSpec* spec = request.mutable_spec()->mutable_convert();
  spec->set_input(sd);
  spec->set_output(data_ + "/slow");
  spec->set_target_format(v1::TARGET_FORMAT_SAFETENSORS);
  spec->set_dtype("f16");
  CancelMidwayLeavesNothing(request, data_ + "/slow");
}

// Links out of the server's roots (its data directory): a component folder that is a symlink to
// elsewhere is not the component's folder, and a side file that points outside is refused when
// it is read; neither publishes anything.
TEST_F(PipelineTest, SymlinksOutOfTheRootsAreRefusedAndPublishNothing) {
  const std::string outside = dir_.path() + "/outside";
  ASSERT_EQ(
      RunCommand({kDebianPython, SourceDir() + "/tests/tools/make_diffusers_pipeline.py", outside, "--kind", "sd"})
          .exit_code,
      0);
  const std::string sd = Make("sd");
  fs::remove_all(sd + "/vae");
  fs::create_directory_symlink(outside + "/vae", sd + "/vae");
  Start();
  CommandResult linked_folder =
      Cli({"submit", "shard", "--input", sd, "--output", data_ + "/out1", "--max-shard-size", "0", "--watch"});
  EXPECT_EQ(linked_folder.exit_code, 2) << linked_folder.out << linked_folder.err;
  EXPECT_NE(linked_folder.err.find("'vae'"), std::string::npos) << linked_folder.err;
  ExpectNothingLeftIn(data_ + "/out1");

  fs::remove(sd + "/vae");
  fs::copy(outside + "/vae", sd + "/vae");
  fs::remove(sd + "/tokenizer/vocab.json");
  fs::create_symlink(outside + "/tokenizer/vocab.json", sd + "/tokenizer/vocab.json");
  CommandResult linked_file =
      Cli({"submit", "shard", "--input", sd, "--output", data_ + "/out2", "--max-shard-size", "0", "--watch"});
  EXPECT_NE(linked_file.exit_code, 0) << linked_file.out;
  EXPECT_NE((linked_file.out + linked_file.err).find("PATH_OUTSIDE_ROOTS"), std::string::npos)
      << linked_file.out << linked_file.err;
  ExpectNothingLeftIn(data_ + "/out2");
}

TEST_F(PipelineTest, AMissingComponentFolderIsRefusedWithTheComponentNamed) {
  const std::string sd = Make("sd");
  fs::remove_all(sd + "/vae");
  Start();
  CommandResult run = Cli({"submit", "shard", "--input", sd, "--output", data_ + "/out", "--max-shard-size", "5GB"});
  EXPECT_EQ(run.exit_code, 2) << run.out << run.err;
  EXPECT_NE(run.err.find("COMPONENT_MISSING"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("'vae'"), std::string::npos) << run.err;
  EXPECT_FALSE(fs::exists(data_ + "/out"));
}

}  // namespace
}  // namespace modelsmith::testing
