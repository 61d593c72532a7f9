#include "server/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "TLS_FILE_INVALID",
                     absl::StrCat(flag, " '", path, "' cannot be read"),
                     {{"file", path}, {"field", std::string(flag)}});
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status FileError(const std::string& path, absl::string_view flag, absl::string_view what) {
  return MakeError(absl::StatusCode::kFailedPrecondition, "TLS_FILE_INVALID",
                   absl::StrCat(flag, " '", path, "' ", what), {{"file", path}, {"field", std::string(flag)}});
}

// The certificate parses, the key parses and belongs to it (OpenSSL), so a wrong file is refused
// at start rather than failing every handshake later.
absl::Status CheckIdentity(const TlsSettings& tls) {
  absl::StatusOr<std::string> cert_pem = ReadPem(tls.cert_file, "--tls-cert");
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadPem(tls.key_file, "--tls-key");
  if (!key_pem.ok()) return key_pem.status();
  BIO* cert_bio = BIO_new_mem_buf(cert_pem->data(), static_cast<int>(cert_pem->size()));
  X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  BIO_free(cert_bio);
  if (cert == nullptr) return FileError(tls.cert_file, "--tls-cert", "holds no PEM certificate");
  BIO* key_bio = BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  absl::Status status;
  if (key == nullptr) {
    status = FileError(tls.key_file, "--tls-key", "holds no PEM private key (or it is encrypted)");
  } else if (X509_check_private_key(cert, key) != 1) {
    status = FileError(tls.key_file, "--tls-key",
                       absl::StrCat("is not the key of the certificate in '", tls.cert_file, "'"));
  }
  ERR_clear_error();
  EVP_PKEY_free(key);
  X509_free(cert);
  if (!status.ok() || tls.client_ca_file.empty()) return status;
  absl::StatusOr<std::string> ca_pem = ReadPem(tls.client_ca_file, "--tls-client-ca");
  if (!ca_pem.ok()) return ca_pem.status();
  if (!absl::StrContains(*ca_pem, "-----BEGIN CERTIFICATE-----")) {
    return FileError(tls.client_ca_file, "--tls-client-ca", "holds no PEM certificate");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsSettings& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return MakeError(absl::StatusCode::kInvalidArgument, "TLS_CONFIG_INVALID", "--tls-cert and --tls-key go together",
                     {{"field", tls.cert_file.empty() ? "--tls-cert" : "--tls-key"}});
  }
  if (tls.cert_file.empty()) {
    if (!tls.client_ca_file.empty()) {
      return MakeError(absl::StatusCode::kInvalidArgument, "TLS_CONFIG_INVALID",
                       "--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)",
                       {{"field", "--tls-client-ca"}});
    }
    return grpc::InsecureServerCredentials();
  }
  if (absl::Status s = CheckIdentity(tls); !s.ok()) return s;
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, tls.client_ca_file, std::max(1u, tls.reload_seconds));
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (tls.client_ca_file.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::experimental::TlsServerCredentials(options);
  if (credentials == nullptr) {
    return MakeError(absl::StatusCode::kInternal, "TLS_CONFIG_INVALID", "gRPC refused the TLS settings");
  }
  return credentials;
}

bool IsLoopbackListen(absl::string_view listen) {
  const size_t colon = listen.rfind(':');
  absl::string_view host = colon == absl::string_view::npos ? listen : listen.substr(0, colon);
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

absl::Status CheckPlaintextAllowed(absl::string_view listen, bool tls, bool insecure_plaintext) {
  if (tls || insecure_plaintext || IsLoopbackListen(listen)) return absl::OkStatus();
  return MakeError(absl::StatusCode::kFailedPrecondition, "PLAINTEXT_NOT_LOOPBACK",
                   absl::StrCat("refusing to serve plaintext gRPC on '", listen,
                                "', which is not a loopback address: give --tls-cert and --tls-key, or "
                                "--insecure-plaintext to accept unencrypted, unauthenticated traffic"),
                   {{"field", "--listen"}});
}

}  // namespace modelsmith
