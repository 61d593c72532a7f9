#!/usr/bin/env python3
"""Writes a tiny random Hugging Face causal LM (config.json, tokenizer.json, tokenizer_config.json,
model.safetensors in F32) for the llama.cpp proof tests, and computes its next-token
probabilities with an independent numpy implementation of the Hugging Face forward pass, written
from each family's definition (RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU, Qwen2's
q/k/v biases, Qwen3's per-head q/k RMSNorm before RoPE, Phi-3's fused qkv_proj and gate_up_proj,
Mixtral's and Qwen3-MoE's top-k expert routing: softmax over the router's logits, the k largest
renormalised, each expert a SwiGLU; Gemma 2's (1 + w) RMSNorm, embedding scale, post-attention
and post-feed-forward norms, GeGLU, attention and final-logit soft-capping, tied embeddings; Gemma 3's
q/k norms and local (sliding) / global RoPE bases, every sixth layer global; Llama
3.1's RoPE scaling as transformers' _compute_llama3_parameters computes its inverse frequencies).

  make_hf_llm.py DIR --family llama|llama31|qwen2|qwen3|phi3|mixtral|qwen3moe|gemma2|gemma3 [--tokenizer bpe|spm]
                     [--seed N]      (llama31: Llama with Llama 3.1's "llama3" RoPE scaling)
      writes the checkpoint; --tokenizer spm trains a small SentencePiece model (Debian's
      python3-sentencepiece; BPE with byte fallback, as Llama 2's) on a fixed multilingual text
      and writes tokenizer.model instead of tokenizer.json
  make_hf_llm.py DIR --encode TEXT
      prints {"ids": [...]}: TEXT encoded with DIR's tokenizer: SentencePiece's own encoder for a
      tokenizer.model, else a small reference byte-level BPE encoder for tokenizer.json (its Split
      regex with Debian's python3-regex, GPT-2's byte-to-unicode map, merges applied by rank)
  make_hf_llm.py DIR --probs TOKENS [--ggml-gelu]
      prints {"probs": [...]} for the token ids (comma-separated) read from DIR
"""
import argparse
import json
import os
import struct

import numpy as np

ARCH = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
        "phi3": "Phi3ForCausalLM", "mixtral": "MixtralForCausalLM", "qwen3moe": "Qwen3MoeForCausalLM",
        "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM", "llama31": "LlamaForCausalLM"}
VOCAB = 272  # 256 byte tokens, 13 merges, 3 specials


def byte_tokens():
    """GPT-2's byte-to-unicode map: the 256 byte-level tokens."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def tokenizer(family):
    """A byte-level BPE tokenizer.json with the family's pre-tokenizer split (Llama 3's groups up to
    three digits, Qwen2's splits every digit)."""
    tokens = byte_tokens()
    merges = [("Ġ", "t"), ("h", "e"), ("i", "n"), ("Ġt", "he"), ("e", "r"), ("o", "n"), ("Ġ", "a"), ("r", "e"),
              ("a", "t"), ("e", "n"), ("o", "r"), ("e", "s"), ("Ġ", "s")]
    vocab = {t: i for i, t in enumerate(tokens)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = [{"id": len(vocab) + i, "content": s, "special": True, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False} for i, s in enumerate(specials)]
    digits = r"\p{N}{1,3}" if family == "llama" else r"\p{N}"
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|" + digits +
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    return {"version": "1.0", "added_tokens": added,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
            "model": {"type": "BPE", "vocab": vocab, "merges": [a + " " + b for a, b in merges]}}


CORPUS = [
    "The quick brown fox jumps over the lazy dog while the weather stays fine.",
    "Models are converted, quantized and split by a service that platforms share.",
    "Le renard brun saute par-dessus le chien paresseux près de la rivière.",
    "Der schnelle braune Fuchs springt über den faulen Hund am Fluss.",
    "El veloz zorro marrón salta sobre el perro perezoso junto al río.",
    "素早い茶色の狐が怠け者の犬を飛び越える。",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "Numbers 0123456789 and symbols: (a+b)*c = d; x -> y!",
]


def train_spm(directory, vocab_size, dummy_prefix=True):
    import io
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 20), model_writer=model, vocab_size=vocab_size,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
                                   minloglevel=2, hard_vocab_limit=False, add_dummy_prefix=dummy_prefix)
    open(os.path.join(directory, "tokenizer.model"), "wb").write(model.getvalue())
    return spm.SentencePieceProcessor(model_proto=model.getvalue()).vocab_size()


def bpe_encode(tokenizer, text):
    """Byte-level BPE as tokenizers runs it: split by the pre-tokenizer's regex (Isolated), map
    each piece's UTF-8 bytes through GPT-2's byte-to-unicode table, then merge the adjacent pair
    of lowest rank until none is in the merge list, and look the symbols up."""
    import regex
    pattern = next(p["pattern"]["Regex"] for p in tokenizer["pre_tokenizer"]["pretokenizers"] if p["type"] == "Split")
    byte_map = byte_tokens()
    vocab = tokenizer["model"]["vocab"]
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(tokenizer["model"]["merges"])}
    ids = []
    for piece in regex.findall(pattern, text):
        symbols = [byte_map[b] for b in piece.encode("utf-8")]
        while len(symbols) > 1:
            pairs = [(ranks.get((a, b), len(ranks)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
            rank, i = min(pairs)
            if rank == len(ranks):
                break
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        ids += [vocab[s] for s in symbols]
    return ids


def config(family):
    c = {"architectures": [ARCH[family]], "model_type": family, "hidden_size": 64, "intermediate_size": 96,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
         "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "vocab_size": VOCAB, "bos_token_id": VOCAB - 3,
         "eos_token_id": VOCAB - 3, "tie_word_embeddings": False, "torch_dtype": "float32"}
    if family in ("qwen3", "qwen3moe"):
        c["head_dim"] = 32  # heads * head_dim = 128, not the hidden size: key_length must be written
    if family == "mixtral":
        c.update({"num_local_experts": 4, "num_experts_per_tok": 2})
    if family == "llama31":  # short original context, so every regime of the scaling occurs
        c.update({"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                          "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 16}})
    if family == "gemma3":  # six layers: five local (sliding, RoPE base 10000) and one global
        c.update({"num_hidden_layers": 6, "head_dim": 16, "query_pre_attn_scalar": 16, "rope_theta": 1000000.0,
                  "rope_local_base_freq": 10000.0, "sliding_window": 512, "sliding_window_pattern": 6,
                  "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
                  "attn_logit_softcapping": None, "final_logit_softcapping": None,
                  "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True})
    if family == "gemma2":
        c.update({"head_dim": 16, "query_pre_attn_scalar": 16, "attn_logit_softcapping": 50.0,
                  "final_logit_softcapping": 30.0, "sliding_window": 4096, "hidden_activation": "gelu_pytorch_tanh",
                  "tie_word_embeddings": True})
    if family == "qwen3moe":
        c.update({"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 48, "norm_topk_prob": True,
                  "decoder_sparse_step": 1, "mlp_only_layers": []})
    if family == "phi3":
        c.update({"hidden_act": "silu", "sliding_window": None, "original_max_position_embeddings": 128,
                  "rope_scaling": None, "partial_rotary_factor": 1.0})
    return c


def tensors(family, cfg, rng):
    VOCAB = cfg["vocab_size"]
    h, f, heads, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg.get("head_dim", h // heads)
    t = {"model.embed_tokens.weight": rng.standard_normal((VOCAB, h)) * 0.5}
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(h)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(h)
        for name, rows in (("q", heads * d), ("k", kv * d), ("v", kv * d)):
            t[p + "self_attn.%s_proj.weight" % name] = rng.standard_normal((rows, h)) * 0.15
            if family == "qwen2":
                t[p + "self_attn.%s_proj.bias" % name] = rng.standard_normal(rows) * 0.1
        if family in ("qwen3", "qwen3moe", "gemma3"):
            t[p + "self_attn.q_norm.weight"] = 1 + 0.1 * rng.standard_normal(d)
            t[p + "self_attn.k_norm.weight"] = 1 + 0.1 * rng.standard_normal(d)
        t[p + "self_attn.o_proj.weight"] = rng.standard_normal((h, heads * d)) * 0.15
        t[p + "mlp.gate_proj.weight"] = rng.standard_normal((f, h)) * 0.15
        t[p + "mlp.up_proj.weight"] = rng.standard_normal((f, h)) * 0.15
        t[p + "mlp.down_proj.weight"] = rng.standard_normal((h, f)) * 0.15
        if family in ("mixtral", "qwen3moe"):  # the dense MLP becomes a router and its experts
            for n in ("gate", "up", "down"):
                t.pop(p + "mlp.%s_proj.weight" % n)
            e, fe = cfg.get("num_local_experts", cfg.get("num_experts")), cfg.get("moe_intermediate_size", f)
            names = {"gate": "w1", "up": "w3", "down": "w2"} if family == "mixtral" else \
                {n: n + "_proj" for n in ("gate", "up", "down")}
            block = "block_sparse_moe" if family == "mixtral" else "mlp"
            t[p + block + ".gate.weight"] = rng.standard_normal((e, h)) * 0.5
            for x in range(e):
                q = p + "%s.experts.%d." % (block, x)
                t[q + names["gate"] + ".weight"] = rng.standard_normal((fe, h)) * 0.15
                t[q + names["up"] + ".weight"] = rng.standard_normal((fe, h)) * 0.15
                t[q + names["down"] + ".weight"] = rng.standard_normal((h, fe)) * 0.15
        if family == "phi3":  # Phi-3 stores both projections fused: [q; k; v] and [gate; up]
            t[p + "self_attn.qkv_proj.weight"] = np.concatenate(
                [t.pop(p + "self_attn.%s_proj.weight" % n) for n in "qkv"])
            t[p + "mlp.gate_up_proj.weight"] = np.concatenate(
                [t.pop(p + "mlp.gate_proj.weight"), t.pop(p + "mlp.up_proj.weight")])
    t["model.norm.weight"] = 1 + 0.1 * rng.standard_normal(h)
    t["lm_head.weight"] = rng.standard_normal((VOCAB, h)) * 0.6  # a clear top-1 for the quantized checks
    if family in ("gemma2", "gemma3"):  # norms scale by 1 + w; two more per layer; the head is the embedding
        for name in list(t):
            if name.endswith("norm.weight"):
                t[name] = 0.1 * rng.standard_normal(t[name].shape)
        for l in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % l
            t[p + "pre_feedforward_layernorm.weight"] = 0.1 * rng.standard_normal(h)
            t[p + "post_feedforward_layernorm.weight"] = 0.1 * rng.standard_normal(h)
        del t["lm_head.weight"]
        # The tied head reads the embedding: smaller values keep the logits in soft-capping's
        # linear range, so the distribution is not one-hot.
        t["model.embed_tokens.weight"] = rng.standard_normal((VOCAB, h)) * 0.15
    return {k: v.astype(np.float32) for k, v in t.items()}


SAFETENSORS_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


def write_safetensors(path, tensors):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(tensors):
        n = tensors[name].nbytes
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensors[name].dtype], "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for name in sorted(tensors):
            f.write(tensors[name].tobytes())


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(data[8 + n + a:8 + n + b], np.float32).reshape(e["shape"]).astype(np.float64)
    return out


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, theta, scaling=None):
    """Rotate-half RoPE over the last axis of x [heads, T, d], positions 0..T-1; with Llama 3
    scaling, the inverse frequencies of transformers' _compute_llama3_parameters."""
    d, t = x.shape[-1], x.shape[-2]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    if scaling and scaling.get("rope_type") == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * np.pi / inv
        scaled = np.where(wavelen > old / low, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / high) & ~(wavelen > old / low)
        inv = np.where(medium, smoothed, scaled)
    ang = np.arange(t)[:, None] * inv[None, :]
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)
    half = d // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def gelu_ggml(x):
    """ggml's CPU GELU: the tanh formula read from a float16 table indexed by float16(x) (identity
    from 10 up, 0 from -10 down). It differs from the formula by up to ~1e-3 relative, which shows
    in the next-token probabilities at the 1e-4 level; --ggml-gelu puts that one rounding into the
    reference so the comparison measures the conversion."""
    y = gelu_tanh(x.astype(np.float16).astype(np.float64)).astype(np.float16).astype(np.float64)
    return np.where(x <= -10, 0.0, np.where(x >= 10, x, y))


def gemma2_forward(cfg, w, tokens, ggml_gelu=False):
    heads, kv, eps, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"], cfg["head_dim"]
    norm = lambda x, name: rms_norm(x, 1 + w[name], eps)
    gelu = gelu_ggml if ggml_gelu else gelu_tanh
    gemma3 = cfg["architectures"][0] == "Gemma3ForCausalLM"
    x = w["model.embed_tokens.weight"][tokens] * np.sqrt(cfg["hidden_size"])
    t = len(tokens)
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = norm(x, p + "input_layernorm.weight")
        q, k, v = ((h @ w[p + "self_attn.%s_proj.weight" % n].T).reshape(t, m, d).transpose(1, 0, 2)
                   for n, m in (("q", heads), ("k", kv), ("v", kv)))
        base = cfg["rope_theta"]
        if gemma3:  # per-head q/k norms before RoPE; sliding layers use the local base
            q, k = norm(q, p + "self_attn.q_norm.weight"), norm(k, p + "self_attn.k_norm.weight")
            if cfg["layer_types"][l] == "sliding_attention":
                base = cfg["rope_local_base_freq"]
        q, k = rope(q, base), rope(k, base)
        k, v = np.repeat(k, heads // kv, 0), np.repeat(v, heads // kv, 0)
        s = q @ k.transpose(0, 2, 1) * cfg["query_pre_attn_scalar"] ** -0.5
        cap = cfg["attn_logit_softcapping"]
        s = (np.tanh(s / cap) * cap if cap else s) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = ((s / s.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(t, heads * d)
        x = x + norm(a @ w[p + "self_attn.o_proj.weight"].T, p + "post_attention_layernorm.weight")
        h = norm(x, p + "pre_feedforward_layernorm.weight")
        y = (gelu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        x = x + norm(y, p + "post_feedforward_layernorm.weight")
    logits = norm(x[-1], "model.norm.weight") @ w["model.embed_tokens.weight"].T
    cap = cfg["final_logit_softcapping"]
    if cap:
        logits = np.tanh(logits / cap) * cap
    e = np.exp(logits - logits.max())
    return e / e.sum()


def forward(cfg, w, tokens, ggml_gelu=False):
    family = {v: k for k, v in ARCH.items()}[cfg["architectures"][0]]
    if family in ("gemma2", "gemma3"):
        return gemma2_forward(cfg, w, tokens, ggml_gelu)
    heads, kv, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"]
    d = cfg.get("head_dim", cfg["hidden_size"] // heads)
    x = w["model.embed_tokens.weight"][tokens]
    t = len(tokens)
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % l
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        if family == "phi3":
            qkv = w[p + "self_attn.qkv_proj.weight"]
            w = dict(w)
            w[p + "self_attn.q_proj.weight"] = qkv[:heads * d]
            w[p + "self_attn.k_proj.weight"] = qkv[heads * d:(heads + kv) * d]
            w[p + "self_attn.v_proj.weight"] = qkv[(heads + kv) * d:]
            f = w[p + "mlp.gate_up_proj.weight"].shape[0] // 2
            w[p + "mlp.gate_proj.weight"] = w[p + "mlp.gate_up_proj.weight"][:f]
            w[p + "mlp.up_proj.weight"] = w[p + "mlp.gate_up_proj.weight"][f:]
        proj = {}
        for name, n in (("q", heads), ("k", kv), ("v", kv)):
            y = h @ w[p + "self_attn.%s_proj.weight" % name].T
            if p + "self_attn.%s_proj.bias" % name in w:
                y = y + w[p + "self_attn.%s_proj.bias" % name]
            y = y.reshape(t, n, d).transpose(1, 0, 2)
            if family in ("qwen3", "qwen3moe") and name in "qk":
                y = rms_norm(y, w[p + "self_attn.%s_norm.weight" % name], eps)
            proj[name] = y
        scaling = cfg.get("rope_scaling")
        q, k, v = rope(proj["q"], cfg["rope_theta"], scaling), rope(proj["k"], cfg["rope_theta"], scaling), proj["v"]
        k, v = np.repeat(k, heads // kv, 0), np.repeat(v, heads // kv, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        x = x + a.transpose(1, 0, 2).reshape(t, heads * d) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)

        def swiglu(gate, up, down):
            g = h @ gate.T
            return (g / (1 + np.exp(-g)) * (h @ up.T)) @ down.T

        if family in ("mixtral", "qwen3moe"):
            block = "block_sparse_moe" if family == "mixtral" else "mlp"
            names = ("w1", "w3", "w2") if family == "mixtral" else ("gate_proj", "up_proj", "down_proj")
            logits = h @ w[p + block + ".gate.weight"].T
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            k = cfg["num_experts_per_tok"]
            out = np.zeros_like(x)
            for e in range(probs.shape[-1]):
                q = p + "%s.experts.%d." % (block, e)
                y = swiglu(*(w[q + n + ".weight"] for n in names))
                for i in range(t):
                    top = np.argsort(-probs[i])[:k]
                    if e in top:
                        out[i] += probs[i, e] / probs[i, top].sum() * y[i]
            x = x + out
        else:
            x = x + swiglu(w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"], w[p + "mlp.down_proj.weight"])
    logits = rms_norm(x[-1], w["model.norm.weight"], eps) @ w["lm_head.weight"].T
    e = np.exp(logits - logits.max())
    return e / e.sum()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--family", choices=sorted(ARCH), default="llama")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probs")
    ap.add_argument("--tokenizer", choices=["bpe", "spm"], default="bpe")
    ap.add_argument("--encode")
    ap.add_argument("--ggml-gelu", action="store_true", help="GELU as ggml's CPU build computes it (gelu_ggml)")
    args = ap.parse_args()
    if args.encode is not None:
        if os.path.exists(os.path.join(args.dir, "tokenizer.model")):
            import sentencepiece as spm
            sp = spm.SentencePieceProcessor(model_file=os.path.join(args.dir, "tokenizer.model"))
            print(json.dumps({"ids": sp.encode(args.encode)}))
        else:
            print(json.dumps({"ids": bpe_encode(json.load(open(os.path.join(args.dir, "tokenizer.json"))), args.encode)}))
        return
    if args.probs:
        cfg = json.load(open(os.path.join(args.dir, "config.json")))
        w = read_safetensors(os.path.join(args.dir, "model.safetensors"))
        probs = forward(cfg, w, [int(t) for t in args.probs.split(",")], args.ggml_gelu)
        print(json.dumps({"probs": probs.tolist()}))
        return
    os.makedirs(args.dir, exist_ok=True)
    cfg = config(args.family)
    template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    if args.tokenizer == "spm":
        pieces = train_spm(args.dir, 420, dummy_prefix=args.family not in ("gemma2", "gemma3"))
        # Chat tokens added after the SentencePiece pieces, as Phi-3 and Mistral instruct models
        # add them (added_tokens.json and tokenizer_config.json's added_tokens_decoder);
        # llama.cpp looks "<|end|>" up when it loads a Phi-3 vocabulary.
        added = ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>", "<|system|>"]
        cfg["vocab_size"] = pieces + len(added)
        cfg["bos_token_id"], cfg["eos_token_id"] = 1, 2
        json.dump({t: pieces + i for i, t in enumerate(added)}, open(os.path.join(args.dir, "added_tokens.json"), "w"))
        decoder = {str(pieces + i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                     "normalized": False, "single_word": False} for i, t in enumerate(added)}
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
                   "add_eos_token": False, "added_tokens_decoder": decoder, "chat_template": template},
                  open(os.path.join(args.dir, "tokenizer_config.json"), "w"))
    else:
        json.dump(tokenizer(args.family), open(os.path.join(args.dir, "tokenizer.json"), "w"), ensure_ascii=False)
        json.dump({"bos_token": None, "eos_token": "<|endoftext|>", "add_bos_token": False, "chat_template": template},
                  open(os.path.join(args.dir, "tokenizer_config.json"), "w"))
    rng = np.random.default_rng(args.seed)
    write_safetensors(os.path.join(args.dir, "model.safetensors"), tensors(args.family, cfg, rng))
    json.dump(cfg, open(os.path.join(args.dir, "config.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
