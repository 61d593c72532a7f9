// The Hugging Face tokenizer files of a GGUF vocabulary: the inverse of what hf_to_gguf writes,
// so that GGUF -> HF -> GGUF gives back every tokenizer.* key.
//   - "gpt2" (byte-level BPE): tokenizer.json (normal tokens in the model's vocab, control and
//     user-defined ones as added tokens, UNUSED holes left out; the merges; the pre-tokenizer of
//     tokenizer.ggml.pre) and tokenizer_config.json.
//   - "llama" (SentencePiece): tokenizer.model, a ModelProto with the pieces up to the trailing
//     run of added tokens (CONTROL / USER_DEFINED scored -1000, as the converter scores them) and
//     "[PAD<i>]" holes (UNUSED, -10000), each with its score and type; a BPE trainer spec (byte
//     fallback when there are BYTE pieces; unk/bos/eos/pad ids of the metadata) and the normalizer
//     llama.cpp applies: identity, whitespace escaped but not collapsed, the dummy prefix of
//     tokenizer.ggml.add_space_prefix. The trailing added tokens go to added_tokens.json and to
//     tokenizer_config.json's added_tokens_decoder (special when CONTROL). A vocabulary
//     SentencePiece could not load (an empty or repeated piece) gets no tokenizer.model.
//   - tokenizer_config.json for both: the BOS/EOS/UNK/PAD contents, add-BOS/EOS flags, chat
//     template and the transformers tokenizer class.
// Another vocabulary (or an incomplete one) gives no files.
#ifndef MODELSMITH_WORKERS_JOBS_CONVERT_GGUF_TOKENIZER_H_
#define MODELSMITH_WORKERS_JOBS_CONVERT_GGUF_TOKENIZER_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "workers/formats/gguf.h"

namespace modelsmith {

// The special tokens both directions map: llama.cpp's name ("tokenizer.ggml.<name>_token_id")
// and tokenizer_config.json's key.
struct SpecialTokenKey {
  const char* gguf;
  const char* config;
};
inline constexpr SpecialTokenKey kSpecialTokenKeys[] = {
    {"bos", "bos_token"}, {"eos", "eos_token"}, {"unknown", "unk_token"}, {"padding", "pad_token"}};

// File name -> contents, in the order they are written.
using TokenizerFiles = std::vector<std::pair<std::string, std::string>>;

// `architecture`: general.architecture (it picks the tokenizer class).
TokenizerFiles RebuildTokenizerFiles(const GgufFile& gguf, const std::string& architecture);

// The tokenizer.json Split regex of each llama.cpp BPE pre-tokenizer name it is recognised from
// ("llama-bpe", "qwen2", "tekken"; "gpt-2" is a lone ByteLevel and has none).
const std::map<std::string, std::string>& BpePreTokenizerSplits();

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CONVERT_GGUF_TOKENIZER_H_
