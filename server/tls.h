// Transport security for modelsmithd's gRPC port: TLS with gRPC's own TLS credentials, mutual
// TLS when a client CA is given, and the rule that plaintext is only for loopback.
//
// The certificate, key and client CA files are watched by gRPC's FileWatcherCertificateProvider:
// a rotation (cert-manager renewing a Secret, an operator replacing the files) is picked up within
// `reload_seconds` by new connections, without a restart; established connections keep theirs.
#ifndef MODELSMITH_SERVER_TLS_H_
#define MODELSMITH_SERVER_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/server_credentials.h"

namespace modelsmith {

struct TlsSettings {
  std::string cert_file;       // PEM certificate chain; empty: plaintext
  std::string key_file;        // PEM private key of the first certificate
  std::string client_ca_file;  // PEM CA bundle; set: clients must present a certificate it signed
  unsigned reload_seconds = 60;
};

// The credentials for the gRPC port. INVALID_ARGUMENT (reason TLS_CONFIG_INVALID, naming the
// flag) when a key comes without a certificate or the reverse, or a client CA without both, and
// FAILED_PRECONDITION (TLS_FILE_INVALID, naming the file) when a file cannot be read, holds no
// PEM certificate or key, or the key does not belong to the certificate.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsSettings& tls);

// True for "127.x.y.z:PORT", "localhost:PORT", "[::1]:PORT".
bool IsLoopbackListen(absl::string_view listen);

// FAILED_PRECONDITION (PLAINTEXT_NOT_LOOPBACK) when `listen` is not a loopback address, TLS is
// off and `insecure_plaintext` was not given.
absl::Status CheckPlaintextAllowed(absl::string_view listen, bool tls, bool insecure_plaintext);

}  // namespace modelsmith

#endif  // MODELSMITH_SERVER_TLS_H_
