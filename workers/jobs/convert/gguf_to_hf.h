// What a llama.cpp GGUF of the Llama family is on the Hugging Face side (the reverse of
// llama.cpp's convert_hf_to_gguf.py for LlamaForCausalLM / MistralForCausalLM, which it writes as
// architecture "llama", Qwen2ForCausalLM, "qwen2", Qwen3ForCausalLM, "qwen3", and Phi3ForCausalLM,
// "phi3", whose attn_qkv and ffn_up become the fused self_attn.qkv_proj and mlp.gate_up_proj;
// MixtralForCausalLM ("llama" with experts) and Qwen3MoeForCausalLM ("qwen3moe"), whose stacked
// ffn_*_exps become one tensor per expert and ffn_gate_inp the router; Gemma2ForCausalLM and
// Gemma3ForCausalLM
// ("gemma2": post_attention_norm, ffn_norm and post_ffw_norm are the post-attention,
// pre- and post-feed-forward layernorms, every norm stored as 1 + w comes back as w, and the
// soft-capping and sliding-window keys go back into config.json):
//   - names: token_embd -> model.embed_tokens, blk.N.attn_norm -> model.layers.N.input_layernorm,
//     attn_q/k/v/output -> self_attn.q_proj/k_proj/v_proj/o_proj (weights and biases),
//     ffn_gate/up/down -> mlp.gate_proj/up_proj/down_proj, ffn_norm -> post_attention_layernorm,
//     attn_q_norm/attn_k_norm -> self_attn.q_norm/k_norm (Qwen3),
//     output_norm -> model.norm, output -> lm_head;
//   - Q/K row order: for "llama", llama.cpp permutes the rows of q_proj (n_head heads) and k_proj
//     (n_head_kv heads) so that each head's two rotary halves interleave: GGUF row (h, 2k + s)
//     is HF row (h, s * head_dim/2 + k). The reverse is applied here; "qwen2" is not permuted;
//   - config.json from the metadata: hidden, intermediate and vocab sizes, layer and head counts,
//     context length, RMS-norm epsilon, RoPE base, BOS/EOS ids, head_dim from key_length, tied
//     embeddings when there is no output tensor.
//   - RoPE scaling: rope.scaling.type / factor / original_context_length (linear, yarn) become
//     rope_scaling; rope_freqs.weight (llama.cpp's table for Llama 3's scaling) has no Hugging
//     Face tensor and becomes rope_scaling "llama3" with parameters that compute the same table
//     (llama3_rope.h), or FAILED_PRECONDITION ROPE_FREQS_UNRECOVERABLE when none do.
// The vocabulary becomes tokenizer files (gguf_tokenizer.h).
#ifndef MODELSMITH_WORKERS_JOBS_CONVERT_GGUF_TO_HF_H_
#define MODELSMITH_WORKERS_JOBS_CONVERT_GGUF_TO_HF_H_

#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "workers/formats/model_view.h"
#include "workers/jobs/convert/gguf_tokenizer.h"

namespace modelsmith {

struct HfTensor {
  std::string name;
  // HF row r is GGUF row row_source[r]; empty when the order is the same.
  std::vector<uint64_t> row_source;
  // Set for one expert of a stacked GGUF tensor: its shape (its rows picked by row_source).
  std::vector<uint64_t> shape;
  // Added to every value (Gemma norms: llama.cpp stores 1 + w, Hugging Face w).
  float add = 0.0f;
};

struct GgufToHf {
  std::string architecture;  // the GGUF's general.architecture
  nlohmann::ordered_json config;
  // The vocabulary as Hugging Face tokenizer files (gguf_tokenizer.h); empty when it is not one
  // that can be rebuilt.
  TokenizerFiles tokenizer_files;
  std::map<std::string, HfTensor> tensors;  // by GGUF tensor name
  // Stacked expert tensors (ffn_*_exps), each one Hugging Face tensor per expert, by GGUF name.
  std::map<std::string, std::vector<HfTensor>> experts;
  std::vector<std::string> dropped;  // GGUF tensors with no Hugging Face counterpart
};

// FAILED_PRECONDITION (GGUF_ARCHITECTURE_UNSUPPORTED) for other architectures,
// INVALID_ARGUMENT (GGUF_METADATA_INVALID / GGUF_TENSOR_UNMAPPED) naming the key or tensor.
absl::StatusOr<GgufToHf> MapGgufToHf(const ModelView& model);

// The one name table both directions use: llama.cpp name -> Hugging Face name. Whole names for
// the top-level tensors ("token_embd.weight"), module names within a block ("attn_q" ->
// "self_attn.q_proj", found under "blk.N." / "model.layers.N.").
struct LlamaNames {
  std::map<std::string, std::string> top;
  std::map<std::string, std::string> block;
};
const LlamaNames& LlamaTensorNames();

// Names for the tensors one family calls differently from Llama (Phi-3's fused projections,
// Gemma 2's extra norms), mapped through Llama's table: a name holding a `renames` part (from ->
// to) has that part swapped for `probe`, is mapped by `map`, and the result's `mapped_probe`
// swapped for the target part. Other names are mapped as they are; "" when `map` knows none.
std::string MapThroughProbe(const std::string& name, std::initializer_list<std::pair<const char*, const char*>> renames,
                            const char* probe, const char* mapped_probe,
                            const std::function<std::string(const std::string&)>& map);

// The row order llama.cpp gives a Q or K projection of `rows` rows in `heads` heads: the
// GGUF-to-HF map described above. INVALID_ARGUMENT unless rows is a multiple of 2 * heads.
absl::StatusOr<std::vector<uint64_t>> UnpermuteRows(uint64_t rows, uint64_t heads);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CONVERT_GGUF_TO_HF_H_
