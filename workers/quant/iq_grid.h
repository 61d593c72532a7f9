// The lattice codebooks of ggml's IQ1/IQ2/IQ3 types and the search structures their quantizers
// use (ggml-quants.c iq2xs_init_impl / iq3xs_init_impl), built once per process on first use
// (thread-safe) and identical every time:
//   - each point's coordinates as the search sees them, 2l + 1 for level l;
//   - a map from a packed code (`bits` per coordinate, first lowest) to its grid index;
//   - for every code that is not a grid point, its nearest points: all points in the nearest
//     `shells` distinct squared distances, ordered by (distance, index), exactly the lists ggml
//     builds by sorting every point;
//   - each point's decoded values (int8 per coordinate) as ggml's dequantization tables hold them.
#ifndef MODELSMITH_WORKERS_QUANT_IQ_GRID_H_
#define MODELSMITH_WORKERS_QUANT_IQ_GRID_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace modelsmith {

enum class IqGridKind { kIQ2XXS, kIQ2XS, kIQ2S, kIQ1S, kIQ3XXS, kIQ3S };

class IqGrid {
 public:
  static const IqGrid& Get(IqGridKind kind);

  int size() const { return size_; }
  int dims() const { return dims_; }
  int bits() const { return bits_; }
  // Coordinates 2l + 1 of grid point `index`.
  const int8_t* Point(int index) const { return &points_[static_cast<size_t>(index) * dims_]; }
  // Decoded values of grid point `index` (ggml's iq*_grid tables).
  const int8_t* Decoded(int index) const { return &decoded_[static_cast<size_t>(index) * dims_]; }
  // What IndexOf reads: per code, the grid index (>= 0) or a negative neighbour-list reference.
  const int32_t* Map() const { return map_.data(); }
  // The grid index of `code`, or -1 when it is not a grid point. REQUIRES: code < map size.
  int IndexOf(uint32_t code) const { return map_[code] >= 0 ? map_[code] : -1; }
  // The nearest points of an off-grid code: *count of them. REQUIRES: IndexOf(code) < 0.
  const uint16_t* Neighbours(uint32_t code, int* count) const {
    const uint16_t* list = &neighbours_[static_cast<size_t>(-map_[code] - 1)];
    *count = list[0];
    return list + 1;
  }
  // The packed code of `dims` levels, the first lowest.
  uint32_t CodeOf(const int8_t* levels) const {
    uint32_t code = 0;
    for (int i = 0; i < dims_; ++i) code |= static_cast<uint32_t>(levels[i]) << (bits_ * i);
    return code;
  }
  // Coordinates of every point as floats, point p at [p * dims()].
  const float* FloatPoints() const { return float_points_.data(); }
  // Among the neighbours of off-grid `code`, the point nearest `xval` at `scale` by the weighted
  // squared distance (the first on ties), as ggml's iq2/iq3_find_best_neighbour: its levels go
  // to L and its index is returned. Runs IqNearestNeighbourAvx2 (simd_avx2.h) where the CPU has
  // AVX2, IqNearestNeighbourScalar otherwise; both return the same index.
  int BestNeighbour(uint32_t code, const float* xval, const float* weight, float scale, int8_t* L) const;

 private:
  IqGrid(const uint16_t* packed, int size, int bits, int dims, int shells, const int8_t* level_values);

  int size_, dims_, bits_;
  std::vector<int8_t> points_;
  std::vector<int8_t> decoded_;
  std::vector<float> float_points_;  // points_ as floats, for the neighbour search
  // >= 0: the grid index; < 0: -(offset + 1) of the code's neighbour list (count, then indices).
  std::vector<int32_t> map_;
  std::vector<uint16_t> neighbours_;
};

// The search behind BestNeighbour, four coordinates at a time (SSE2): among `count` indices into
// `points` (`dims` floats each), the first of least sum_i weight[i] * (scale * p[i] - xval[i])^2
// summed in coordinate order; -1 when none is below FLT_MAX.
int IqNearestNeighbourScalar(int dims, const float* points, const uint16_t* neighbours, int count, const float* xval,
                             const float* weight, float scale);

// ggml's sign tables: 7 sign bits plus an 8th that makes the count of negatives even.
inline uint8_t EvenParitySigns(uint8_t seven_bits) {
  return static_cast<uint8_t>(seven_bits | ((__builtin_popcount(seven_bits) & 1) << 7));
}

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_QUANT_IQ_GRID_H_
