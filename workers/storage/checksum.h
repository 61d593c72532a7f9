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

}  // namespace modelsmith

#endif  // MODELSMITH_WORKERS_STORAGE_CHECKSUM_H_
