// TempDir: a fresh directory under $TMPDIR (or /tmp) for one test, removed afterwards.
#ifndef MODELSMITH_TESTS_SUPPORT_TEMP_DIR_H_
#define MODELSMITH_TESTS_SUPPORT_TEMP_DIR_H_

#include <cstdlib>
#include <filesystem>
#include <string>

namespace modelsmith {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base ? base : "/tmp") + "/modelsmith-test-XXXXXX";
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_TESTS_SUPPORT_TEMP_DIR_H_
