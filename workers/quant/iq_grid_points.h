// The IQ types' codebooks as ggml defines them (iq_grid_points.cc): one packed point per grid
// index. Data only; iq_grid.h builds the search structures from them.
#ifndef MODELSMITH_WORKERS_QUANT_IQ_GRID_POINTS_H_
#define MODELSMITH_WORKERS_QUANT_IQ_GRID_POINTS_H_

#include <cstdint>

namespace modelsmith::iq_points {

// 8 coordinates of 2 bits (levels 0..2).
extern const uint16_t kIQ2XXS[256];
extern const uint16_t kIQ2XS[512];
extern const uint16_t kIQ2S[1024];
extern const uint16_t kIQ1S[2048];
// 4 coordinates of 3 bits (levels 0..7).
extern const uint16_t kIQ3XXS[256];
extern const uint16_t kIQ3S[512];

}  // namespace modelsmith::iq_points

#endif  // MODELSMITH_WORKERS_QUANT_IQ_GRID_POINTS_H_
