// What a Hugging Face checkpoint of the Llama family (LlamaForCausalLM, MistralForCausalLM,
// MixtralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Qwen3MoeForCausalLM, Phi3ForCausalLM,
// Gemma2ForCausalLM, Gemma3ForCausalLM) becomes in a llama.cpp GGUF, the way llama.cpp's
// convert_hf_to_gguf.py writes it (the reverse of gguf_to_hf.h):
//   - architecture "llama" (Llama and Mistral), "qwen2" or "qwen3" (its per-head q/k norms as
//     blk.N.attn_q_norm / attn_k_norm) or "phi3" (qkv_proj and gate_up_proj kept fused as
//     attn_qkv and ffn_up); mixture-of-experts models (Mixtral as "llama", Qwen3-MoE as
//     "qwen3moe") get their router as ffn_gate_inp and their experts stacked into
//     ffn_{gate,up,down}_exps ([experts, rows, columns], written expert by expert; every expert
//     present, of one shape and dtype, else TENSOR_MISSING / TENSOR_SHAPE_MISMATCH), with
//     .expert_count, .expert_used_count and .expert_feed_forward_length; "gemma2": its four norms
//     per layer (attn_norm, post_attention_norm, ffn_norm, post_ffw_norm) written as 1 + w as
//     llama.cpp's converter does, lm_head left out (tied), soft-capping and sliding-window keys;
//     "gemma3" likewise, its q/k norms also 1 + w;
//     metadata from config.json:
//     <arch>.context_length (max_position_embeddings), .embedding_length (hidden_size),
//     .block_count, .feed_forward_length, .attention.head_count, .attention.head_count_kv,
//     .rope.freq_base (rope_theta), .attention.layer_norm_rms_epsilon, .vocab_size,
//     .rope.dimension_count (head_dim, else hidden / heads), .attention.key_length and
//     .value_length when config.json states head_dim, linear and yarn RoPE scaling, and Llama 3
//     RoPE scaling as llama.cpp's rope_freqs.weight table (F32, one factor per rotary pair, first
//     in the file, computed as the converter computes it);
//     general.file_type and general.quantization_version;
//   - tensor names (model.layers.N.self_attn.q_proj.weight -> blk.N.attn_q.weight, ...), and for
//     "llama" the rows of q_proj / k_proj interleaved per head as llama.cpp's permute does;
//   - the tokenizer: a SentencePiece tokenizer.model when there is one (spm_vocab.h:
//     tokenizer.ggml.model "llama", as the converter prefers it), else tokenizer.json's BPE:
//     tokenizer.ggml.model "gpt2", tokens in id
//     order ("[PAD<i>]" for holes, type UNUSED), token types (NORMAL; added tokens CONTROL when
//     special, USER_DEFINED otherwise), merges, BOS/EOS/UNK/PAD ids and add_bos/add_eos from
//     tokenizer_config.json (else config.json), the chat template, and tokenizer.ggml.pre: the
//     spec's `tokenizer_pre`, else decided from the pre-tokenizer definition (llama.cpp hashes a
//     tokenization, which needs transformers): the exact split regex of Llama 3 ("llama-bpe"),
//     Qwen2/Qwen3 ("qwen2") or Mistral Nemo ("tekken"), or a lone GPT-2 ByteLevel ("gpt-2");
//     anything else is FAILED_PRECONDITION TOKENIZER_PRE_UNKNOWN (field convert.tokenizer_pre).
// Types: 1-D tensors F32, every other tensor `type` (a whole number of its blocks per row, else
// F16), as the converter does for --outtype.
// Refused: other architectures (UNIMPLEMENTED ARCHITECTURE_UNSUPPORTED, naming the supported ones),
// other RoPE scaling types (which needs a rope_freqs table), a
// tokenizer.json that is not BPE or is missing, and names the map does not know.
#ifndef MODELSMITH_WORKERS_JOBS_CONVERT_HF_TO_GGUF_H_
#define MODELSMITH_WORKERS_JOBS_CONVERT_HF_TO_GGUF_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "workers/formats/gguf.h"
#include "workers/formats/model_view.h"

namespace modelsmith {

struct GgufOutputTensor {
  const TensorInfo* source = nullptr;
  std::string name;
  GgmlType type = GgmlType::kF16;
  // GGUF row r is source row row_source[r]; empty when the order is the same.
  std::vector<uint64_t> row_source;
  // Mixture-of-experts: the expert tensors stacked, expert e's rows after expert e-1's (a GGUF
  // shape of [n_expert, rows, cols]); `source` is stacked.front(). Written expert by expert.
  std::vector<const TensorInfo*> stacked;
  // Added to every value before it is encoded (Gemma's norm weights: llama.cpp stores 1 + w).
  float add = 0.0f;
  // A tensor the converter computes (Llama 3's rope_freqs): its F32 values and shape; `source`
  // is null.
  std::vector<float> computed;
};

struct HfToGguf {
  std::string architecture;
  std::vector<GgufKv> kvs;
  std::vector<GgufOutputTensor> tensors;
};

struct HfFiles {
  nlohmann::json config;
  std::optional<nlohmann::json> tokenizer;         // tokenizer.json
  std::optional<nlohmann::json> tokenizer_config;  // tokenizer_config.json
  std::optional<std::string> sentencepiece_model;  // tokenizer.model (bytes)
  std::optional<nlohmann::json> added_tokens;      // added_tokens.json
};

// The JSON files beside the model: config.json (required), tokenizer.json and
// tokenizer_config.json (optional here). INVALID_ARGUMENT for files that are not JSON objects.
absl::StatusOr<HfFiles> ReadHfFiles(ObjectStore& store, const ModelView& model);

absl::StatusOr<HfToGguf> MapHfToGguf(const ModelView& model, const HfFiles& files, GgmlType type,
                                     const std::string& name, const std::string& tokenizer_pre = "");

// llama.cpp's permute for `heads` heads of `rows` rows: GGUF row (h, 2k + s) is HF row
// (h, s * head_dim/2 + k).
absl::StatusOr<std::vector<uint64_t>> PermuteRows(uint64_t rows, uint64_t heads);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CONVERT_HF_TO_GGUF_H_
