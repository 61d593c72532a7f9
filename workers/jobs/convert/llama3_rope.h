// Llama 3's RoPE scaling (config.json rope_scaling, rope_type "llama3") and llama.cpp's form of
// it, the rope_freqs.weight table of per-pair frequency divisors: both directions.
//
// The converter computes, per rotary pair i of a head (base^(-2i/d) the frequency, w = 2 pi /
// frequency its wavelength): 1 where w < original / high_freq_factor, `factor` where w >
// original / low_freq_factor, and between them 1 / ((1 - s) / factor + s) with
// s = (original / w - low) / (high - low). Only the table reaches the GGUF, and it fixes the
// parameters only up to a common scale of (original, low, high); Llama 3.x uses low 1, so the
// reverse takes low = 1 and solves for the rest (high 4 where the table has too few smooth
// entries to tell), tries the same line at low 2 and 1/2 (whose float rounding can differ), and
// keeps an answer only when it computes the same table bit for bit.
#ifndef MODELSMITH_WORKERS_JOBS_CONVERT_LLAMA3_ROPE_H_
#define MODELSMITH_WORKERS_JOBS_CONVERT_LLAMA3_ROPE_H_

#include <cstdint>
#include <optional>
#include <vector>

namespace modelsmith {

struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_context = 8192.0;  // original_max_position_embeddings
};

// The table for a head of `head_dim` (even, > 0) at RoPE base `base`; `low != high`.
std::vector<float> Llama3RopeFactors(const Llama3RopeScaling& scaling, double base, uint64_t head_dim);

// Parameters that give exactly `table` (head_dim = 2 * table.size()) at `base`, or nullopt.
std::optional<Llama3RopeScaling> RecoverLlama3RopeScaling(const std::vector<float>& table, double base);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CONVERT_LLAMA3_ROPE_H_
