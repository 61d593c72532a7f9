// A float as a config file holds it: its shortest round-trip decimal ("1e-05", not the double
// 1.0000000116860974e-05 the float widens to), read back as a double, as Python prints a float
// that came from an F32.
#ifndef MODELSMITH_WORKERS_COMMON_FLOAT_TEXT_H_
#define MODELSMITH_WORKERS_COMMON_FLOAT_TEXT_H_

namespace modelsmith {

double ShortestDecimal(float value);

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_COMMON_FLOAT_TEXT_H_
