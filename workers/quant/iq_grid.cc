#include "workers/quant/iq_grid.h"

#include <emmintrin.h>

#include <algorithm>
#include <cfloat>
#include <memory>
#include <mutex>
#include <utility>

#include "workers/quant/iq_grid_points.h"
#include "workers/quant/simd_avx2.h"

namespace modelsmith {
namespace {

// What each type's points decode to, per level (ggml-common.h's iq*_grid tables, checked against
// them in iq_grid_test.cc).
constexpr int8_t kIQ2Levels[] = {8, 25, 43, 0};
constexpr int8_t kIQ1Levels[] = {-1, 0, 1, 0};
constexpr int8_t kIQ3XXSLevels[] = {4, 12, 20, 28, 36, 44, 52, 62};
constexpr int8_t kIQ3SLevels[] = {1, 3, 5, 7, 9, 11, 13, 15};

// ggml's map sizes: every code whose coordinates are at most 2 (2-bit grids) or 7 (3-bit).
constexpr int kMap2Bit = 43692;
constexpr int kMap3Bit = 4096;

}  // namespace

IqGrid::IqGrid(const uint16_t* packed, int size, int bits, int dims, int shells, const int8_t* level_values)
    : size_(size), dims_(dims), bits_(bits) {
  const int mask = (1 << bits) - 1;
  points_.resize(static_cast<size_t>(size) * dims);
  decoded_.resize(points_.size());
  const int map_size = bits == 2 ? kMap2Bit : kMap3Bit;
  map_.assign(map_size, -1);
  for (int k = 0; k < size; ++k) {
    for (int i = 0; i < dims; ++i) {
      const int l = (packed[k] >> (bits * i)) & mask;
      points_[k * dims + i] = static_cast<int8_t>(2 * l + 1);
      decoded_[k * dims + i] = level_values[l];
    }
    map_[packed[k]] = k;
  }
  float_points_.assign(points_.begin(), points_.end());
  // Every off-grid code's neighbours: the points in its `shells` nearest distances. Finding the
  // shells first and sorting only their members gives ggml's lists (it sorts all points by
  // (distance, index) and cuts after the last shell) at a fraction of the cost.
  std::vector<int> dist2(size);
  std::vector<std::pair<int, int>> members;
  int8_t pos[8];
  for (int code = 0; code < map_size; ++code) {
    if (map_[code] >= 0) continue;
    for (int i = 0; i < dims; ++i) pos[i] = static_cast<int8_t>(2 * ((code >> (bits * i)) & mask) + 1);
    int nearest[3] = {INT32_MAX, INT32_MAX, INT32_MAX};  // the `shells` smallest distinct distances
    for (int j = 0; j < size; ++j) {
      const int8_t* pg = &points_[j * dims];
      int d2 = 0;
      for (int i = 0; i < dims; ++i) d2 += (pg[i] - pos[i]) * (pg[i] - pos[i]);
      dist2[j] = d2;
      for (int s = 0; s < shells; ++s) {
        if (d2 == nearest[s]) break;
        if (d2 < nearest[s]) {
          for (int t = shells - 1; t > s; --t) nearest[t] = nearest[t - 1];
          nearest[s] = d2;
          break;
        }
      }
    }
    int limit = nearest[0];
    for (int s = 0; s < shells; ++s) {
      if (nearest[s] != INT32_MAX) limit = nearest[s];
    }
    members.clear();
    for (int j = 0; j < size; ++j) {
      if (dist2[j] <= limit) members.emplace_back(dist2[j], j);
    }
    std::sort(members.begin(), members.end());
    map_[code] = -static_cast<int32_t>(neighbours_.size() + 1);
    neighbours_.push_back(static_cast<uint16_t>(members.size()));
    for (const auto& [d2, j] : members) neighbours_.push_back(static_cast<uint16_t>(j));
  }
}

namespace {

// The neighbour search with the dimension known at compile time. The terms w * diff * diff of
// a point are computed four coordinates at a time (SSE2, part of every x86-64) and then added in
// coordinate order, so each distance is the scalar loop's to the bit. `points`: the coordinates
// as floats (exact), point p at [p * kDims].
template <int kDims>
int NearestNeighbourOf(const float* points, const uint16_t* neighbours, int count, const float* xval,
                       const float* weight, float scale) {
  constexpr int kQuads = kDims / 4;
  const __m128 vscale = _mm_set1_ps(scale);
  __m128 x[kQuads], w[kQuads];
  for (int h = 0; h < kQuads; ++h) {
    x[h] = _mm_loadu_ps(xval + 4 * h);
    w[h] = _mm_loadu_ps(weight + 4 * h);
  }
  float best_d2 = FLT_MAX;
  int best = -1;
  alignas(16) float terms[kDims];
  for (int j = 0; j < count; ++j) {
    const float* pg = points + static_cast<size_t>(neighbours[j]) * kDims;
    for (int h = 0; h < kQuads; ++h) {
      const __m128 diff = _mm_sub_ps(_mm_mul_ps(vscale, _mm_loadu_ps(pg + 4 * h)), x[h]);
      _mm_store_ps(terms + 4 * h, _mm_mul_ps(_mm_mul_ps(w[h], diff), diff));
    }
    float d2 = terms[0];  // 0 + terms[0], the terms being >= 0
    for (int i = 1; i < kDims; ++i) d2 += terms[i];
    if (d2 < best_d2) {
      best_d2 = d2;
      best = neighbours[j];
    }
  }
  return best;
}

}  // namespace

int IqNearestNeighbourScalar(int dims, const float* points, const uint16_t* neighbours, int count, const float* xval,
                             const float* weight, float scale) {
  return dims == 4 ? NearestNeighbourOf<4>(points, neighbours, count, xval, weight, scale)
                   : NearestNeighbourOf<8>(points, neighbours, count, xval, weight, scale);
}

int IqGrid::BestNeighbour(uint32_t code, const float* xval, const float* weight, float scale, int8_t* L) const {
  int count = 0;
  const uint16_t* neighbours = Neighbours(code, &count);
  const int best = CpuHasAvx2Fma16c()
                       ? IqNearestNeighbourAvx2(dims_, float_points_.data(), neighbours, count, xval, weight, scale)
                       : IqNearestNeighbourScalar(dims_, float_points_.data(), neighbours, count, xval, weight, scale);
  const int8_t* pg = Point(best);
  for (int i = 0; i < dims_; ++i) L[i] = static_cast<int8_t>((pg[i] - 1) / 2);
  return best;
}

const IqGrid& IqGrid::Get(IqGridKind kind) {
  static std::once_flag once[6];
  static std::unique_ptr<IqGrid> grids[6];
  const int k = static_cast<int>(kind);
  std::call_once(once[k], [&] {
    switch (kind) {
      case IqGridKind::kIQ2XXS: grids[k].reset(new IqGrid(iq_points::kIQ2XXS, 256, 2, 8, 2, kIQ2Levels)); break;
      case IqGridKind::kIQ2XS: grids[k].reset(new IqGrid(iq_points::kIQ2XS, 512, 2, 8, 2, kIQ2Levels)); break;
      case IqGridKind::kIQ2S: grids[k].reset(new IqGrid(iq_points::kIQ2S, 1024, 2, 8, 1, kIQ2Levels)); break;
      case IqGridKind::kIQ1S: grids[k].reset(new IqGrid(iq_points::kIQ1S, 2048, 2, 8, 3, kIQ1Levels)); break;
      case IqGridKind::kIQ3XXS: grids[k].reset(new IqGrid(iq_points::kIQ3XXS, 256, 3, 4, 2, kIQ3XXSLevels)); break;
      case IqGridKind::kIQ3S: grids[k].reset(new IqGrid(iq_points::kIQ3S, 512, 3, 4, 3, kIQ3SLevels)); break;
    }
  });
  return *grids[k];
}

}  // namespace modelsmith
