// Parsing of size strings with explicit units, so "5GB" can never silently mean 5 GiB.
#ifndef MODELSMITH_WORKERS_JOBS_CORE_SIZE_STRING_H_
#define MODELSMITH_WORKERS_JOBS_CORE_SIZE_STRING_H_

#include "absl/strings/string_view.h"
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace modelsmith {

// Accepts a plain byte count ("1048576"), or a number (fractions allowed: "2.5GB") followed by
// one unit, optionally after one space: B, KB, MB, GB, TB (powers of 10) or KiB, MiB, GiB, TiB
// (powers of 2). Fractional bytes are truncated, as huggingface_hub's parser does. "0" and
// "none" mean no limit and return 0. Units are case-sensitive: "5Gb" and "5gb" are refused
// because transformers reads a lowercase b as bits. INVALID_ARGUMENT (reason INVALID_SIZE)
// otherwise, including on overflow.
absl::StatusOr<uint64_t> ParseSize(absl::string_view text);

// The shard limit diffusers' and huggingface_hub's save_pretrained use by default: "10GB".
inline constexpr uint64_t kHfDefaultShardBytes = 10'000'000'000;

// Renders bytes for people: "1.50 GB (1500000000 bytes)" style is left to callers; this gives
// the shortest exact decimal form with a decimal unit where one fits ("5GB"), else bytes.
std::string FormatBytesHuman(uint64_t bytes);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_JOBS_CORE_SIZE_STRING_H_
