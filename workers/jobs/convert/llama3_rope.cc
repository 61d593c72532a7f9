#include "workers/jobs/convert/llama3_rope.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "workers/common/float_text.h"

namespace modelsmith {
namespace {

double Wavelength(double base, uint64_t pair, uint64_t head_dim) {
  return 2 * M_PI * std::pow(base, static_cast<double>(2 * pair) / static_cast<double>(head_dim));
}

// The value a parameter is written with: the shortest decimal of its float, as a config holds it.
double Tidy(double v) { return ShortestDecimal(static_cast<float>(v)); }

}  // namespace

std::vector<float> Llama3RopeFactors(const Llama3RopeScaling& s, double base, uint64_t head_dim) {
  const double low_wavelen = s.original_context / s.low_freq_factor;
  const double high_wavelen = s.original_context / s.high_freq_factor;
  std::vector<float> factors;
  for (uint64_t pair = 0; pair < head_dim / 2; ++pair) {
    const double wavelen = Wavelength(base, pair, head_dim);
    if (wavelen < high_wavelen) {
      factors.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      factors.push_back(static_cast<float>(s.factor));
    } else {
      const double smooth =
          (s.original_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      factors.push_back(static_cast<float>(1 / ((1 - smooth) / s.factor + smooth)));
    }
  }
  return factors;
}

std::optional<Llama3RopeScaling> RecoverLlama3RopeScaling(const std::vector<float>& table, double base) {
  if (table.empty() || !(base > 1)) return std::nullopt;
  const uint64_t head_dim = 2 * table.size();
  const float top = *std::max_element(table.begin(), table.end());
  if (!(top >= 1.0f) || !std::isfinite(top)) return std::nullopt;
  // s_i of every smooth entry against x_i = 1 / w_i: s = original * x - 1 over (high - 1).
  std::vector<std::pair<double, double>> smooth;
  double widest_one = 0, narrowest_top = INFINITY;
  for (uint64_t pair = 0; pair < table.size(); ++pair) {
    const double w = Wavelength(base, pair, head_dim);
    if (table[pair] == 1.0f) {
      widest_one = std::max(widest_one, w);
    } else if (table[pair] == top) {
      narrowest_top = std::min(narrowest_top, w);
    } else {
      const double inverse = 1.0 / table[pair], factor_inverse = 1.0 / top;
      smooth.emplace_back(1 / w, (inverse - factor_inverse) / (1 - factor_inverse));
    }
  }
  std::vector<Llama3RopeScaling> candidates;
  auto add = [&](double original, double high) {
    if (!(original > 0) || !(high > 1) || !std::isfinite(original) || !std::isfinite(high)) return;
    for (const double o : {std::round(original), Tidy(original), original}) {
      // A fitted value is a few ulps off the one written in a config: try it rounded too.
      for (const double h : {std::round(high * 100) / 100, Tidy(high), high})
        candidates.push_back({Tidy(top), 1.0, h, o});
    }
  };
  if (smooth.size() >= 2) {  // two entries fix the line: s = A x + B, B = -1 / (high - 1), A = original / (high - 1)
    const auto [x0, s0] = smooth.front();
    const auto [x1, s1] = smooth.back();
    if (x0 != x1) {
      const double slope = (s1 - s0) / (x1 - x0), intercept = s0 - slope * x0;
      if (intercept < 0) add(-slope / intercept, 1 - 1 / intercept);
    }
  }
  if (smooth.size() == 1) add((3 * smooth.front().second + 1) / smooth.front().first, 4.0);
  if (smooth.empty()) {
    // Any original in (4 * widest_one, narrowest_top) with high 4; Llama 3's 8192 when it fits,
    // else the power of two nearest the middle.
    const double lo = 4 * widest_one, hi = narrowest_top;
    if (lo < 8192 && 8192 < hi) add(8192, 4.0);
    if (lo < hi) add(std::exp2(std::round(std::log2(std::isinf(hi) ? 2 * lo + 1 : std::sqrt(lo * hi)))), 4.0);
    if (lo < hi) add(std::isinf(hi) ? 2 * lo + 1 : (lo + hi) / 2, 4.0);
  }
  // Low 1 first; then the same line at low 2 and 1/2, whose float rounding can differ.
  for (const double low : {1.0, 2.0, 0.5}) {
    for (const Llama3RopeScaling& c : candidates) {
      const Llama3RopeScaling scaled{c.factor, low, c.high_freq_factor * low, c.original_context * low};
      if (Llama3RopeFactors(scaled, base, head_dim) == table) return scaled;
    }
  }
  return std::nullopt;
}

}  // namespace modelsmith
