// AVX2 + FMA + F16C versions of the hottest kernels, each computing exactly what its scalar
// reference computes (tests/unit/simd_test.cc checks them bit for bit on random and adversarial
// input). Only simd_avx2*.cc are compiled for AVX2; callers go through the dispatching entry
// points (quantize_rows.h, quality.h, bitsandbytes.h), which use these when the CPU has AVX2,
// FMA and F16C, and the scalar code otherwise.
//
// The arithmetic that must match: Q8_0 rounds x*id half away from zero (t = trunc(v), plus
// sign(v) when |v - t| >= 0.5); Q4_0 takes the first value of largest magnitude (a block of zeros
// gives +0) and truncates fma(x, id, 8.5); a float that becomes an int8 keeps the low byte of
// cvttss2si, as the scalar casts compile to on x86 (NaN gives 0); max ignores NaN as std::max
// does. F16 -> F32 is exact (NaNs are quieted, as F16C does).
#ifndef MODELSMITH_WORKERS_QUANT_SIMD_AVX2_H_
#define MODELSMITH_WORKERS_QUANT_SIMD_AVX2_H_

#include <cstddef>
#include <cstdint>

namespace modelsmith {

// True when this CPU runs the functions below (checked once).
bool CpuHasAvx2Fma16c();
// True when this CPU also has AVX-512F (checked once): the *Avx512 kernels run.
bool CpuHasAvx512();

void DecodeF16Avx2(const uint8_t* in, size_t n, float* y);
void QuantizeRowQ8_0Avx2(const float* x, size_t n, uint8_t* out);
void DequantizeRowQ8_0Avx2(const uint8_t* in, size_t n, float* y);
void QuantizeRowQ4_0Avx2(const float* x, size_t n, uint8_t* out);
void DequantizeRowQ4_0Avx2(const uint8_t* in, size_t n, float* y);

// QualityStats' block sums (quality.h): for `n` finite sources, lane sums of s*s and e*e with
// e = s - r (lane = index % 8, in index order), returned in `signal[8]` / `noise[8]` added to
// their contents, and the largest |e| (max with `*max_error`).
void QualityBlockAvx2(const float* s, const float* r, size_t n, float* signal, float* noise, float* max_error);
// True when every value is finite.
bool AllFiniteAvx2(const float* x, size_t n);

// bitsandbytes 4-bit blocks (bitsandbytes.h) against the 16-entry quantization `table`.
void Bnb4QuantizeAvx2(const float* table, const float* x, size_t n, size_t block, uint8_t* packed, float* absmax);

// ggml's make_qkx2_quants (qkx2_search.h), eight candidate scales per pass.
float MakeQkx2QuantsAvx2(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                         uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad);

// MakeQkx2QuantsGroups' eight-group step (qkx2_search.h): group k (x + k * n, its weights and
// L likewise) in lane k.
void MakeQkx2Quants8GroupsAvx2(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* scales,
                               float* the_mins, float rmin, float rdelta, int nstep, bool use_mad);

// ggml's make_qx_quants (scale_search.h), its 19 candidate scales eight per pass. n <= 32.
float MakeQxQuantsAvx2(int n, int nmax, const float* x, int8_t* L, const float* qw);

// IqGrid::BestNeighbour's search (iq_grid.h): among `count` neighbour indices into `points`
// (`dims` = 4 or 8 floats per point), the first of least weighted squared distance
// sum_i weight[i] * (scale * p[i] - xval[i])^2, summed in coordinate order; -1 when none is
// below FLT_MAX. Eight points per pass, transposed so each lane sums one point.
int IqNearestNeighbourAvx2(int dims, const float* points, const uint16_t* neighbours, int count, const float* xval,
                           const float* weight, float scale);

// Iq4CandidateFitsScalar (ggml_iq4.h), eight inverse scales per pass.
void Iq4CandidateFitsAvx2(const float* xb, const float* weight, const float* ids, float* sumqx, float* sumq2);

// MakeQxQuantsGroups' eight-group step (scale_search.h): group k in lane k.
void MakeQx8GroupsAvx2(int n, int nmax, const float* x, int8_t* L, const float* qw, float* scales);

// bitsandbytes LLM.int8 of one row of FP16-valued floats: q = round_half_even(x * (127/absmax)).
float BnbInt8QuantizeRowAvx2(const float* x, size_t n, int8_t* q);
// y = q * SCB * (1/127), the two products rounded in that order.
void BnbInt8DequantizeRowAvx2(const int8_t* q, size_t n, float scb, float* y);

// F32 -> BF16 / F16 (cast.h): round to nearest even, NaN quiet (BF16: top half | 0x40; F16 as
// F16C), exactly as Fp32ToBf16 / Fp32ToFp16. Adds the NaN inputs to `*nan` and the finite
// inputs that became +-Inf to `*overflowed`.
void Fp32ToBf16RowAvx2(const float* x, size_t n, uint16_t* out, uint64_t* nan, uint64_t* overflowed);
void Fp32ToFp16RowAvx2(const float* x, size_t n, uint16_t* out, uint64_t* nan, uint64_t* overflowed);

// One row of a low-rank update (low_rank_update.h): for k = 0 .. rank-1 in order,
// row[j] = fma(coef[k], basis[k * cols + j], row[j]), as std::fma computes it.
void LowRankRowAvx2(const float* coef, const float* basis, size_t rank, size_t cols, float* row);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_SIMD_AVX2_H_
