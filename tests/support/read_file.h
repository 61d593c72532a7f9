// ReadFile: a whole file's bytes, for tests that compare what a job wrote ("" when it is missing).
#ifndef MODELSMITH_TESTS_SUPPORT_READ_FILE_H_
#define MODELSMITH_TESTS_SUPPORT_READ_FILE_H_

#include <fstream>
#include <sstream>
#include <string>

namespace modelsmith {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace modelsmith

#endif  // MODELSMITH_TESTS_SUPPORT_READ_FILE_H_
