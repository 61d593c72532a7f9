#include "workers/storage/checksum.h"

#include <openssl/evp.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/strings/escaping.h"

namespace modelsmith {
namespace {

struct DigestDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using Digest = std::unique_ptr<EVP_MD_CTX, DigestDeleter>;

Digest NewSha256() {
  Digest ctx(EVP_MD_CTX_new());
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  return ctx;
}

std::string FinishHex(EVP_MD_CTX* ctx) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx, digest, &length);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), length));
}

}  // namespace

std::string Sha256Hex(absl::string_view bytes) {
  Digest ctx = NewSha256();
  EVP_DigestUpdate(ctx.get(), bytes.data(), bytes.size());
  return FinishHex(ctx.get());
}

Sha256Stream::Sha256Stream() : ctx_(NewSha256().release()) {}
Sha256Stream::~Sha256Stream() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256Stream::Update(const void* data, size_t size) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size);
}

absl::Status Sha256Stream::UpdateFrom(const RandomAccessObject& object, uint64_t offset, uint64_t length) {
  constexpr uint64_t kPieceBytes = 1 << 20;
  std::vector<std::byte> buffer(std::min(kPieceBytes, length));
  for (uint64_t done = 0; done < length;) {
    const size_t piece = static_cast<size_t>(std::min(kPieceBytes, length - done));
    if (absl::Status s = object.ReadAt(offset + done, piece, buffer.data()); !s.ok()) return s;
    Update(buffer.data(), piece);
    done += piece;
  }
  return absl::OkStatus();
}

std::string Sha256Stream::FinishHex() { return modelsmith::FinishHex(static_cast<EVP_MD_CTX*>(ctx_)); }

absl::StatusOr<std::string> Sha256Hex(const RandomAccessObject& object, const std::function<void(uint64_t)>& on_bytes,
                                      const std::function<bool()>& should_stop) {
  // 1 MiB pieces: large enough to amortise the read calls, small enough to stay in L2/L3.
  constexpr uint64_t kPieceBytes = 1 << 20;
  Digest ctx = NewSha256();
  std::vector<std::byte> buffer(kPieceBytes);
  for (uint64_t offset = 0; offset < object.size_bytes();) {
    if (should_stop && should_stop()) return absl::CancelledError("stopped while hashing");
    const size_t piece = static_cast<size_t>(std::min(kPieceBytes, object.size_bytes() - offset));
    if (absl::Status s = object.ReadAt(offset, piece, buffer.data()); !s.ok()) return s;
    EVP_DigestUpdate(ctx.get(), buffer.data(), piece);
    offset += piece;
    if (on_bytes) on_bytes(piece);
  }
  return FinishHex(ctx.get());
}

}  // namespace modelsmith
