#!/usr/bin/env python3
"""Tiny diffusers pipelines with the real directory layout, for the pipeline job tests.

  make_diffusers_pipeline.py DIR --kind sd|kolors|flux [--seed N] [--big-mb N] [--fp16-copy]
      sd:     StableDiffusionPipeline: unet, text_encoder (CLIP), vae, scheduler, tokenizer, and the
              optional safety_checker / feature_extractor left out as [null, null].
      kolors: KolorsPipeline: a ChatGLM3-shaped text_encoder (transformer.encoder.layers.N.
              self_attention.query_key_value, mlp.dense_h_to_4h, ...), unet, vae, scheduler, tokenizer.
      flux:   FluxPipeline: a transformer sharded in two (diffusion_pytorch_model-0000N-of-00002 with
              its index), text_encoder (CLIP), text_encoder_2 (T5 encoder, model-0000N-of-00002),
              vae, scheduler, tokenizer, tokenizer_2.
  make_diffusers_pipeline.py FILE --lora sd|flux [--style diffusers|kohya] [--seed N]
      a diffusers-style LoRA adapter (.safetensors) whose keys carry unet./transformer. and
      text_encoder. prefixes for the pipeline of that kind.

Weights are random float32 (numpy; Debian's python3 has it); every file is deterministic. Sizes are
kept to a few hundred KB per component so a test can reshard them at small limits.
"""
import argparse
import json
import os
import struct

import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_hf_llm import write_safetensors  # noqa: E402  (one safetensors writer for the test tools)


def write_sharded(directory, stem, tensors, shards):
    """As save_pretrained shards: names split in order, one index naming each tensor's file."""
    names = sorted(tensors)
    per = (len(names) + shards - 1) // shards
    weight_map, total = {}, 0
    for i in range(shards):
        part = names[i * per:(i + 1) * per]
        fname = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(os.path.join(directory, fname), {n: tensors[n] for n in part})
        for n in part:
            weight_map[n] = fname
            total += tensors[n].nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    json.dump(index, open(os.path.join(directory, f"{stem}.safetensors.index.json"), "w"), indent=2)


FP16_COPIES = False  # --fp16-copy: an fp16 variant beside every component's plain weights, as Hub repos hold


def component(root, name, config, tensors=None, stem=None, shards=1, config_name="config.json"):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    json.dump(config, open(os.path.join(d, config_name), "w"), indent=2)
    if tensors is not None:
        if shards > 1:
            write_sharded(d, stem, tensors, shards)
        else:
            write_safetensors(os.path.join(d, f"{stem}.safetensors"), tensors)
        if FP16_COPIES:
            write_safetensors(os.path.join(d, f"{stem}.fp16.safetensors"),
                              {k: v.astype(np.float16) for k, v in tensors.items()})


def rand(rng, *shape):
    return (rng.standard_normal(shape) * 0.02).astype(np.float32)


def unet(rng, ch=32, ctx=32):
    t = {"conv_in.weight": rand(rng, ch, 4, 3, 3), "conv_in.bias": rand(rng, ch),
         "conv_out.weight": rand(rng, 4, ch, 3, 3), "conv_out.bias": rand(rng, 4),
         "time_embedding.linear_1.weight": rand(rng, ch * 4, ch), "time_embedding.linear_1.bias": rand(rng, ch * 4)}
    for b in range(2):
        p = f"down_blocks.{b}.attentions.0.transformer_blocks.0."
        for proj in ("to_q", "to_k", "to_v"):
            t[p + f"attn1.{proj}.weight"] = rand(rng, ch, ch)
        t[p + "attn1.to_out.0.weight"] = rand(rng, ch, ch)
        t[p + "attn1.to_out.0.bias"] = rand(rng, ch)
        t[p + "attn2.to_q.weight"] = rand(rng, ch, ch)
        t[p + "attn2.to_k.weight"] = rand(rng, ch, ctx)
        t[p + "attn2.to_v.weight"] = rand(rng, ch, ctx)
        t[p + "ff.net.0.proj.weight"] = rand(rng, ch * 8, ch)
        t[p + "ff.net.2.weight"] = rand(rng, ch, ch * 4)
        t[f"down_blocks.{b}.resnets.0.conv1.weight"] = rand(rng, ch, ch, 3, 3)
        t[f"down_blocks.{b}.resnets.0.norm1.weight"] = np.ones(ch, np.float32)
    return t


def vae(rng, ch=16):
    return {"encoder.conv_in.weight": rand(rng, ch, 3, 3, 3), "encoder.conv_in.bias": rand(rng, ch),
            "encoder.conv_out.weight": rand(rng, 8, ch, 3, 3), "decoder.conv_in.weight": rand(rng, ch, 4, 3, 3),
            "decoder.conv_out.weight": rand(rng, 3, ch, 3, 3), "quant_conv.weight": rand(rng, 8, 8, 1, 1),
            "post_quant_conv.weight": rand(rng, 4, 4, 1, 1)}


def clip_text(rng, hidden=32, layers=2, vocab=64, prefix="text_model."):
    t = {prefix + "embeddings.token_embedding.weight": rand(rng, vocab, hidden),
         prefix + "embeddings.position_embedding.weight": rand(rng, 16, hidden),
         prefix + "final_layer_norm.weight": np.ones(hidden, np.float32)}
    for i in range(layers):
        p = f"{prefix}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[p + f"self_attn.{proj}.weight"] = rand(rng, hidden, hidden)
            t[p + f"self_attn.{proj}.bias"] = rand(rng, hidden)
        t[p + "mlp.fc1.weight"] = rand(rng, hidden * 4, hidden)
        t[p + "mlp.fc2.weight"] = rand(rng, hidden, hidden * 4)
        t[p + "layer_norm1.weight"] = np.ones(hidden, np.float32)
    return t


def chatglm(rng, hidden=64, layers=2, vocab=96, kv_groups=2, head=16):
    qkv = hidden + 2 * kv_groups * head
    t = {"transformer.embedding.word_embeddings.weight": rand(rng, vocab, hidden),
         "transformer.encoder.final_layernorm.weight": np.ones(hidden, np.float32),
         "transformer.output_layer.weight": rand(rng, vocab, hidden),
         "transformer.rotary_pos_emb.inv_freq": (1.0 / 10000 ** (np.arange(0, head // 2, 2) / (head // 2))).astype(np.float32)}
    for i in range(layers):
        p = f"transformer.encoder.layers.{i}."
        t[p + "input_layernorm.weight"] = np.ones(hidden, np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
        t[p + "self_attention.query_key_value.weight"] = rand(rng, qkv, hidden)
        t[p + "self_attention.query_key_value.bias"] = rand(rng, qkv)
        t[p + "self_attention.dense.weight"] = rand(rng, hidden, hidden)
        t[p + "mlp.dense_h_to_4h.weight"] = rand(rng, 2 * 128, hidden)
        t[p + "mlp.dense_4h_to_h.weight"] = rand(rng, hidden, 128)
    return t


def flux_transformer(rng, inner=64, blocks=2):
    t = {"x_embedder.weight": rand(rng, inner, 16), "x_embedder.bias": rand(rng, inner),
         "context_embedder.weight": rand(rng, inner, 32), "proj_out.weight": rand(rng, 16, inner),
         "norm_out.linear.weight": rand(rng, inner * 2, inner)}
    for b in range(blocks):
        p = f"transformer_blocks.{b}."
        for proj in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
            t[p + f"attn.{proj}.weight"] = rand(rng, inner, inner)
            t[p + f"attn.{proj}.bias"] = rand(rng, inner)
        t[p + "attn.to_out.0.weight"] = rand(rng, inner, inner)
        t[p + "ff.net.0.proj.weight"] = rand(rng, inner * 4, inner)
        t[p + "ff.net.2.weight"] = rand(rng, inner, inner * 4)
        t[p + "norm1.linear.weight"] = rand(rng, inner * 6, inner)
    return t


def t5_encoder(rng, d=32, layers=2, vocab=64):
    t = {"shared.weight": rand(rng, vocab, d), "encoder.embed_tokens.weight": rand(rng, vocab, d),
         "encoder.final_layer_norm.weight": np.ones(d, np.float32)}
    for i in range(layers):
        p = f"encoder.block.{i}."
        for proj in "qkvo":
            t[p + f"layer.0.SelfAttention.{proj}.weight"] = rand(rng, d, d)
        t[p + "layer.0.layer_norm.weight"] = np.ones(d, np.float32)
        t[p + "layer.1.DenseReluDense.wi_0.weight"] = rand(rng, d * 2, d)
        t[p + "layer.1.DenseReluDense.wi_1.weight"] = rand(rng, d * 2, d)
        t[p + "layer.1.DenseReluDense.wo.weight"] = rand(rng, d, d * 2)
    return t


def tokenizer(root, name):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    json.dump({c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}, open(os.path.join(d, "vocab.json"), "w"))
    open(os.path.join(d, "merges.txt"), "w").write("#version: 0.2\na b\nc d\n")
    json.dump({"model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}, open(os.path.join(d, "tokenizer_config.json"), "w"))
    json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>"},
              open(os.path.join(d, "special_tokens_map.json"), "w"))


def scheduler(root, cls):
    component(root, "scheduler", {"_class_name": cls, "_diffusers_version": "0.30.0", "num_train_timesteps": 1000},
              config_name="scheduler_config.json")


def make_pipeline(root, kind, rng, big_mb=0):
    os.makedirs(root, exist_ok=True)
    index = {"_diffusers_version": "0.30.0"}
    clip_cfg = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": 32,
                "num_hidden_layers": 2, "torch_dtype": "float32"}
    if kind in ("sd", "kolors"):
        index.update({"_class_name": "StableDiffusionPipeline" if kind == "sd" else "KolorsPipeline",
                      "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                      "scheduler": ["diffusers", "EulerDiscreteScheduler"]})
        weights = unet(rng)
        if big_mb:
            weights["extra.weight"] = rand(rng, big_mb * 256, 1024)
        component(root, "unet", {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.30.0",
                                 "block_out_channels": [32, 32], "cross_attention_dim": 32}, weights,
                  "diffusion_pytorch_model")
        component(root, "vae", {"_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0", "latent_channels": 4},
                  vae(rng), "diffusion_pytorch_model")
        scheduler(root, "EulerDiscreteScheduler")
    if kind == "sd":
        index.update({"text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
                      "safety_checker": [None, None], "feature_extractor": [None, None]})
        component(root, "text_encoder", clip_cfg, clip_text(rng), "model")
        tokenizer(root, "tokenizer")
    if kind == "kolors":
        index.update({"text_encoder": ["kolors", "ChatGLMModel"], "tokenizer": ["kolors", "ChatGLMTokenizer"],
                      "force_zeros_for_empty_prompt": False})
        component(root, "text_encoder",
                  {"architectures": ["ChatGLMModel"], "model_type": "chatglm", "hidden_size": 64, "num_layers": 2,
                   "ffn_hidden_size": 128, "kv_channels": 16, "multi_query_group_num": 2, "padded_vocab_size": 96,
                   "torch_dtype": "float32",
                   "auto_map": {"AutoModel": "modeling_chatglm.ChatGLMModel"}}, chatglm(rng), "model")
        open(os.path.join(root, "text_encoder", "modeling_chatglm.py"), "w").write("# the model's own code\n")
        tokenizer(root, "tokenizer")
    if kind == "flux":
        index.update({"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"],
                      "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
                      "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                      "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"]})
        component(root, "transformer", {"_class_name": "FluxTransformer2DModel", "_diffusers_version": "0.30.0",
                                        "num_layers": 2}, flux_transformer(rng), "diffusion_pytorch_model", shards=2)
        component(root, "text_encoder", clip_cfg, clip_text(rng), "model")
        component(root, "text_encoder_2", {"architectures": ["T5EncoderModel"], "model_type": "t5", "d_model": 32,
                                           "torch_dtype": "float32"}, t5_encoder(rng), "model", shards=2)
        component(root, "vae", {"_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0", "latent_channels": 4},
                  vae(rng), "diffusion_pytorch_model")
        scheduler(root, "FlowMatchEulerDiscreteScheduler")
        tokenizer(root, "tokenizer")
        tokenizer(root, "tokenizer_2")
    json.dump(index, open(os.path.join(root, "model_index.json"), "w"), indent=2)


def make_lora(path, kind, rng, rank=4, style="diffusers"):
    """diffusers-style keys: <component>.<module path>.lora_A.weight [r, in] / lora_B.weight [out, r];
    kohya: lora_unet_<path with _>.lora_down.weight / .lora_up.weight / .alpha (lora_te_ for the
    text encoder), alpha = r."""
    t = {}
    modules = []
    if kind == "sd":
        modules += [("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 32, 32),
                    ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 32, 32)]
    else:
        modules += [("transformer", "transformer_blocks.0.attn.to_q", 64, 64),
                    ("transformer", "transformer_blocks.1.ff.net.2", 64, 256)]
    modules += [("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj", 32, 32),
                ("text_encoder", "text_model.encoder.layers.1.mlp.fc1", 128, 32)]
    for comp, mod, out, inp in modules:
        down, up = rand(rng, rank, inp) * 10, rand(rng, out, rank) * 10
        if style == "kohya":
            prefix = {"unet": "lora_unet", "transformer": "lora_unet", "text_encoder": "lora_te"}[comp]
            key = f"{prefix}_{mod.replace('.', '_')}"
            t[f"{key}.lora_down.weight"], t[f"{key}.lora_up.weight"] = down, up
            t[f"{key}.alpha"] = np.array(rank, np.float32)
        else:
            t[f"{comp}.{mod}.lora_A.weight"], t[f"{comp}.{mod}.lora_B.weight"] = down, up
    write_safetensors(path, t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path")
    ap.add_argument("--kind", choices=["sd", "kolors", "flux"])
    ap.add_argument("--lora", choices=["sd", "flux"])
    ap.add_argument("--style", choices=["diffusers", "kohya"], default="diffusers", help="the LoRA's key style")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fp16-copy", action="store_true",
                    help="also write every component's weights as an fp16 variant (<stem>.fp16.safetensors)")
    ap.add_argument("--big-mb", type=int, default=0,
                    help="add a tensor of this many MiB to the first weighted component (slow jobs to cancel)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    global FP16_COPIES
    FP16_COPIES = args.fp16_copy
    if args.lora:
        make_lora(args.path, args.lora, rng, style=args.style)
    else:
        make_pipeline(args.path, args.kind or "sd", rng, args.big_mb)


if __name__ == "__main__":
    main()
