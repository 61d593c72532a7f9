#include "workers/common/float_text.h"

#include <charconv>
#include <cstdlib>
#include <string>
#include <system_error>

namespace modelsmith {

double ShortestDecimal(float value) {
  char text[32];
  const auto [end, ec] = std::to_chars(text, text + sizeof(text), value);
  return ec == std::errc() ? std::strtod(std::string(text, end).c_str(), nullptr) : static_cast<double>(value);
}

}  // namespace modelsmith
