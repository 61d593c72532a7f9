// /metrics over TLS with the gRPC port's certificate.
//
// prometheus-cpp serves /metrics with civetweb, whose TLS in Debian 12 is unusable: it loads
// libssl at run time expecting an older OpenSSL API, and a worker calls a null function pointer
// right after the handshake (measured: every HTTPS scrape kills the process). So civetweb serves
// plaintext on a private loopback port, and MetricsTlsFront terminates TLS on the public metrics
// address (Boost.Asio's OpenSSL stream) and relays each connection's bytes to it; basic auth and
// everything HTTP stay civetweb's.
//
// The certificate chain and key are read from their files at every handshake (OpenSSL's
// certificate callback), so a rotation (cert-manager renewing the Secret, an operator replacing
// the files) is served by the next scrape's connection, without a restart. A handshake that finds
// the files unreadable or mismatched fails alone. TLS 1.2 is the minimum. At most
// kMaxConnections connections at once (more are closed at accept), and a handshake must finish
// within kHandshakeSeconds, so idle or slow clients cannot hold the front.
#ifndef MODELSMITH_SERVER_METRICS_TLS_H_
#define MODELSMITH_SERVER_METRICS_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace modelsmith {

class MetricsTlsFront {
 public:
  static constexpr int kMaxConnections = 64;
  static constexpr int kHandshakeSeconds = 10;

  // Listens on `address` ("host:port", port 0 picks one) and relays to 127.0.0.1:`inner_port`.
  // FAILED_PRECONDITION (TLS_FILE_INVALID, naming the file) when the certificate or key does not
  // load now; UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsTlsFront>> Start(const std::string& address, int inner_port,
                                                                const std::string& cert_file,
                                                                const std::string& key_file);
  virtual ~MetricsTlsFront() = default;

  virtual int port() const = 0;  // the bound public port
};

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_METRICS_TLS_H_
