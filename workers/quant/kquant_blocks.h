// The parts of ggml's K-quant blocks (ggml-common.h) that the reference quantizers and their
// importance-matrix versions share once the scales are chosen: the byte layouts, the 6-bit
// scale/min packing, re-quantizing with the stored (FP16-rounded) scales, and the level packing.
// Internal to workers/quant. Pure functions on one 256-element super-block.
#ifndef MODELSMITH_WORKERS_QUANT_KQUANT_BLOCKS_H_
#define MODELSMITH_WORKERS_QUANT_KQUANT_BLOCKS_H_

#include <cstdint>

namespace modelsmith::kquant {

inline constexpr int kQK = 256;

// Block layouts, as byte offsets.
namespace q2k {
inline constexpr int kScales = 0, kQs = 16, kD = 80, kDmin = 82, kBytes = 84;
}
namespace q3k {
inline constexpr int kHmask = 0, kQs = 32, kScales = 96, kD = 108, kBytes = 110;
}
namespace q4k {
inline constexpr int kD = 0, kDmin = 2, kScales = 4, kQs = 16, kBytes = 144;
}
namespace q5k {
inline constexpr int kD = 0, kDmin = 2, kScales = 4, kQh = 16, kQs = 48, kBytes = 176;
}
namespace q6k {
inline constexpr int kQl = 0, kQh = 128, kScales = 192, kD = 208, kBytes = 210;
}

// Q4_K/Q5_K 6-bit scale and min of sub-block j from the 12-byte packing.
void GetScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m);
// The inverse, for all eight sub-blocks (ls, lm at most 63).
void PackScaleMinK4(const uint8_t* ls, const uint8_t* lm, uint8_t* packed);
// Levels of the eight 32-element sub-blocks from the stored d, dmin and packed scales: L in
// [0, nmax]. A sub-block whose scale is zero keeps the levels it had.
void RequantizeK4(const float* x, const uint8_t* d, const uint8_t* dmin, const uint8_t* packed, int nmax, uint8_t* L);
// Q2_K: levels re-quantized from the stored d, dmin and 4-bit scale/min pairs (L in [0, 3]),
// then packed.
void FinishQ2_K(const float* x, uint8_t* L, uint8_t* block);
// 2-bit levels of 128 elements into 32 bytes: element l + 32k at bits 2k of byte l.
void Pack2Bit(const uint8_t* L, uint8_t* qs);
// Q3_K from its sixteen 6-bit scales (0..63, 32 is zero) and d already stored: packs the scales,
// re-quantizes the levels and writes hmask and qs.
void FinishQ3_K(const float* x, const int* scale_levels, int8_t* L, uint8_t* block);
void PackQ4_KLevels(const uint8_t* L, uint8_t* block);
void PackQ5_KLevels(const uint8_t* L, uint8_t* block);
// Q6_K from the sixteen sub-block scales (make_qx_quants results): the int8 scales against the
// largest, re-quantized levels, ql and qh.
void FinishQ6_K(const float* x, const float* scales, int8_t* L, uint8_t* block);

}  // namespace modelsmith::kquant

#endif  // MODELSMITH_WORKERS_QUANT_KQUANT_BLOCKS_H_
