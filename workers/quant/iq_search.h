// The scale search the IQ2 and IQ3 quantizers share (ggml-quants.c quantize_row_iq2_*_impl and
// quantize_row_iq3_*_impl): for 2 * half_tries + 1 candidate inverse scales around
// (2 * max_q - 1) / top, round a block's magnitudes to levels, snap every vector of grid.dims()
// levels to the grid (or to its best weighted neighbour when off the grid), and keep the
// candidate with the best weighted least-squares fit; then re-snap vectors at the fitted scale as
// the type does and refit. Sums run in element order, so the result is ggml's to the bit.
#ifndef MODELSMITH_WORKERS_QUANT_IQ_SEARCH_H_
#define MODELSMITH_WORKERS_QUANT_IQ_SEARCH_H_

#include <cstdint>

#include "workers/quant/iq_grid.h"

namespace modelsmith {

struct IqSearch {
  int n;           // block elements: 16 or 32
  int max_q;       // levels 0 .. max_q - 1 (3 for IQ2, 8 for IQ3)
  float step;      // spacing of the candidates (0.1 or 0.2)
  int half_tries;  // candidates -half_tries .. half_tries
  enum class Resnap {
    kOffGridVectors,     // re-snap the vectors the best candidate left off the grid
    kAllWhenAnyOffGrid,  // re-snap every vector if any was off the grid (IQ3_S)
    kAllAlways,          // re-snap every vector whenever the scale is positive (IQ2_XXS)
  } resnap;
  bool initially_on_grid = true;  // what the bookkeeping assumes before any candidate wins
};

// What each candidate of one block measured. Candidate c is is = c - half_tries; it snapped vector
// k to grid point index[c][k] (the vector's own levels when on_grid[c][k]) and its weighted fit
// sums over the block, in element order, are sumqx[c] and sumq2[c].
struct IqCandidateFits {
  static constexpr int kMax = 32;  // 2 * half_tries + 1, padded to whole passes of eight
  float sumqx[kMax], sumq2[kMax];
  int16_t index[kMax][8];
  bool on_grid[kMax][8];
};

// Measures every candidate: MeasureIqCandidatesScalar one candidate at a time, the AVX2 version
// (simd_avx2.h) eight candidates at a time, one per lane, with the candidates of a vector that
// share an off-grid code searched together (iq_search_avx2.cc). Both fill `fits` identically.
void MeasureIqCandidatesScalar(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight,
                               const float* waux, float top, IqCandidateFits* fits);
// REQUIRES: CpuHasAvx2Fma16c() (simd_avx2.h).
void MeasureIqCandidatesAvx2(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight,
                             const float* waux, float top, IqCandidateFits* fits);
// Sixteen candidates per pass (iq_search_avx512.cc). REQUIRES: CpuHasAvx512() (simd_avx2.h).
void MeasureIqCandidatesAvx512(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight,
                               const float* waux, float top, IqCandidateFits* fits);

// `xval`: the block's magnitudes; `weight` the fit's weights, `waux` their square roots (the
// neighbour search's); `top`: what the candidates divide by; `scale` and `L`: the starting
// point, kept if no candidate fits better. Returns the scale; L holds grid levels.
float IqSnapSearch(const IqGrid& grid, const IqSearch& search, const float* xval, const float* weight,
                   const float* waux, float top, float scale, int8_t* L);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_IQ_SEARCH_H_
