// A SentencePiece tokenizer (tokenizer.model: Llama 2, Mistral v0.1-v0.3, Gemma, Phi-3) as
// llama.cpp's converter writes it into a GGUF (convert_hf_to_gguf.py _create_vocab_sentencepiece):
// tokenizer.ggml.model "llama", .pre "default", one token per id up to the config's vocab size
// ("[PAD<i>]", score -10000, UNUSED past the model's pieces), each piece's score, and its type
// from the piece's own (NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6);
// then added tokens: added_tokens.json entries and tokenizer.json's added_tokens (or
// tokenizer_config.json's added_tokens_decoder) become USER_DEFINED, or CONTROL when special,
// with score -1000. A normalizer without the dummy prefix writes add_space_prefix false.
// INVALID_ARGUMENT TOKENIZER_INVALID for a tokenizer.model that does not parse or has no pieces.
#ifndef MODELSMITH_WORKERS_JOBS_CONVERT_SPM_VOCAB_H_
#define MODELSMITH_WORKERS_JOBS_CONVERT_SPM_VOCAB_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "workers/formats/gguf.h"

namespace modelsmith {

struct SpmVocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  bool add_space_prefix = true;
  int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;  // the trainer's
};

// `model_bytes`: tokenizer.model; `vocab_size`: config.json's (0: the model's piece count);
// `added_tokens_json`, `tokenizer_json`, `tokenizer_config`: the optional JSON files beside it.
absl::StatusOr<SpmVocab> ReadSpmVocab(const std::string& model_bytes, uint64_t vocab_size,
                                      const std::optional<nlohmann::json>& added_tokens_json,
                                      const std::optional<nlohmann::json>& tokenizer_json,
                                      const std::optional<nlohmann::json>& tokenizer_config);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CONVERT_SPM_VOCAB_H_
