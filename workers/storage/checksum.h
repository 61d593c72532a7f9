// SHA-256 of stored objects and of byte strings (OpenSSL EVP), as lowercase hex.
#ifndef MODELSMITH_WORKERS_STORAGE_CHECKSUM_H_
#define MODELSMITH_WORKERS_STORAGE_CHECKSUM_H_

#include "absl/strings/string_view.h"
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "workers/storage/object_store.h"

namespace modelsmith {

std::string Sha256Hex(absl::string_view bytes);

// Reads `object` front to back in bounded pieces. `on_bytes` (optional) is told how many bytes
// each piece had; `should_stop` (optional) is polled between pieces and makes the call return
// CANCELLED when true.
absl::StatusOr<std::string> Sha256Hex(const RandomAccessObject& object,
                                      const std::function<void(uint64_t)>& on_bytes = nullptr,
                                      const std::function<bool()>& should_stop = nullptr);

// SHA-256 fed piece by piece.
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;

  void Update(const void* data, size_t size);
  // Appends object bytes [offset, offset + length) in 1 MiB pieces.
  absl::Status UpdateFrom(const RandomAccessObject& object, uint64_t offset, uint64_t length);
  // The digest of everything fed so far, as lowercase hex; the stream must not be fed after.
  std::string FinishHex();

 private:
  void* ctx_;  // EVP_MD_CTX
};

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_CHECKSUM_H_
