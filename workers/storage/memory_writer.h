// MemoryWriter: an ObjectWriter whose bytes stay in memory, for a job that must produce a group of
// tensors (a quantized weight and its companions) before it knows where each one goes.
#ifndef MODELSMITH_WORKERS_STORAGE_MEMORY_WRITER_H_
#define MODELSMITH_WORKERS_STORAGE_MEMORY_WRITER_H_

#include <string>

#include "workers/storage/object_store.h"

namespace modelsmith {

class MemoryWriter final : public ObjectWriter {
 public:
  explicit MemoryWriter(std::string* bytes) : bytes_(bytes) {}

  const std::string& uri() const override { return uri_; }
  absl::Status Append(std::span<const std::byte> data) override {
    bytes_->append(reinterpret_cast<const char*>(data.data()), data.size());
    return absl::OkStatus();
  }
  uint64_t bytes_written() const override { return bytes_->size(); }
  absl::Status Commit() override { return absl::OkStatus(); }
  void Abort() override { bytes_->clear(); }

 private:
  std::string* bytes_;  // the caller's, which outlives the writer
  const std::string uri_ = "memory:";
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_MEMORY_WRITER_H_
