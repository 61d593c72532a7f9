// MemoryObject: a RandomAccessObject over bytes in memory, named "test.<extension>", so reader
// tests can feed exact byte strings.
#ifndef MODELSMITH_TESTS_SUPPORT_MEMORY_OBJECT_H_
#define MODELSMITH_TESTS_SUPPORT_MEMORY_OBJECT_H_

#include <cstring>
#include <string>

#include "workers/storage/object_store.h"

namespace modelsmith {

class MemoryObject final : public RandomAccessObject {
 public:
  MemoryObject(std::string bytes, std::string uri) : uri_(std::move(uri)), bytes_(std::move(bytes)) {}
  const std::string& uri() const override { return uri_; }
  uint64_t size_bytes() const override { return bytes_.size(); }
  absl::Status ReadAt(uint64_t offset, size_t length, std::byte* dst) const override {
    if (offset > bytes_.size() || length > bytes_.size() - offset) return absl::OutOfRangeError("past the end");
    std::memcpy(dst, bytes_.data() + offset, length);
    return absl::OkStatus();
  }

 private:
  std::string uri_;
  std::string bytes_;
};

}  // namespace modelsmith

#endif  // MODELSMITH_TESTS_SUPPORT_MEMORY_OBJECT_H_
