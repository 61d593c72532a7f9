// llama.cpp's per-tensor type choice for its ftype presets (src/llama-quant.cpp,
// llama_tensor_get_type and the checks around it in llama_model_quantize_impl), as facts:
//   - output.weight (token_embd.weight when the model has no output) Q6_K, Q5_K for the IQ1/IQ2
//     presets, Q8_0 for Falcon or rows that are not whole blocks;
//   - token_embd.weight: Q2_K for IQ2_XXS/IQ2_XS/IQ1_S/IQ1_M, IQ3_S for IQ2_S/IQ2_M/IQ3_XXS, Q4_K for
//     the ternary presets;
//   - attention-V, attention-K/Q, FFN-down/gate/up, attention-output and fused QKV weights by the
//     preset, counting layers in llama-quantize's tensor order (the first and last eighth and every
//     third between: "use_more_bits"), with the GQA (n_head / n_head_kv >= 4), expert-count (8)
//     and 70B rules, and whether an importance matrix is given;
//   - a row that is not a whole number of the chosen type's blocks falls back (IQ/Q2_K/Q3_K to
//     IQ4_NL, Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, TQ to Q4_0; F16 when even that does not fit).
// No I/O.
#ifndef MODELSMITH_WORKERS_JOBS_QUANTIZE_LLAMA_TENSOR_TYPES_H_
#define MODELSMITH_WORKERS_JOBS_QUANTIZE_LLAMA_TENSOR_TYPES_H_

#include <optional>
#include <string>
#include <vector>

#include "workers/jobs/quantize/llama_ftypes.h"
#include "workers/tensor/ggml_types.h"
#include "workers/tensor/tensor_info.h"

namespace modelsmith {

// What the rules read from the model's metadata.
struct LlamaModelFacts {
  std::string arch = "llama";  // general.architecture
  int n_layer = 0;             // <arch>.block_count (0: count the blk.N layers)
  int n_expert = 0;            // <arch>.expert_count
  int n_head = 0;              // <arch>.attention.head_count
  int n_head_kv = 0;           // <arch>.attention.head_count_kv (0: same as n_head)
  bool has_imatrix = false;    // an importance matrix was given for the run
};

// Whether llama-quantize quantizes a tensor at all: a name ending in "weight", at least two
// dimensions, not a norm, not the MoE router (ffn_gate_inp), not position or token-type
// embeddings, not the small Mamba/RWKV/T5 weights; output.weight only without
// `leave_output_tensor`. Any other tensor is copied as stored.
bool LlamaQuantizesTensor(const TensorInfo& tensor, bool leave_output_tensor);

// Whether llama-quantize refuses to write `type` for this tensor without importance data
// ("Missing importance matrix for tensor ... in a very low-bit quantization").
bool LlamaRequiresImportance(LlamaFtype ftype, const std::string& name, GgmlType type);

class LlamaTensorTypes {
 public:
  // `tensors`: every tensor of the model in llama-quantize's order (by blk.N layer, tensors outside
  // a layer first, then by name).
  LlamaTensorTypes(const LlamaFtypeInfo& ftype, const LlamaModelFacts& facts,
                   const std::vector<const TensorInfo*>& tensors, std::optional<GgmlType> output_tensor_type,
                   std::optional<GgmlType> token_embedding_type);

  struct Choice {
    GgmlType type;
    bool fell_back = false;  // the preset's type did not fit the rows
  };
  // The type for the next tensor that LlamaQuantizesTensor, called in llama-quantize's order.
  Choice Next(const TensorInfo& tensor);

 private:
  bool Is(LlamaFtype f) const { return ftype_.ftype == f; }
  GgmlType Choose(const TensorInfo& tensor);
  GgmlType ChooseOutput(uint64_t cols) const;
  GgmlType ChooseTokenEmbedding(GgmlType type) const;
  GgmlType ChooseAttentionV(GgmlType type);
  GgmlType ChooseFfnDown(GgmlType type, const std::string& name);
  GgmlType ChooseAttentionOutput(GgmlType type) const;
  int LayerOf(int counter, const std::string& name) const;

  LlamaFtypeInfo ftype_;
  LlamaModelFacts facts_;
  std::optional<GgmlType> output_tensor_type_;
  std::optional<GgmlType> token_embedding_type_;
  int n_gqa_ = 0;
  bool is_70b_ = false;
  bool has_output_ = false;
  int n_attention_wv_ = 0;
  int i_attention_wv_ = 0, i_ffn_down_ = 0, i_ffn_gate_ = 0, i_ffn_up_ = 0;
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_QUANTIZE_LLAMA_TENSOR_TYPES_H_
