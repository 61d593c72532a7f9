#include "server/metrics_tls.h"

#include <openssl/ssl.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "workers/common/error.h"

namespace modelsmith {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct CertificateFiles {
  std::string cert_file;
  std::string key_file;
};

// OpenSSL's per-handshake certificate hook: the files as they are now. 0 fails the handshake.
int LoadCertificate(SSL* ssl, void* arg) {
  const CertificateFiles& files = *static_cast<const CertificateFiles*>(arg);
  if (SSL_use_certificate_chain_file(ssl, files.cert_file.c_str()) != 1) return 0;
  if (SSL_use_PrivateKey_file(ssl, files.key_file.c_str(), SSL_FILETYPE_PEM) != 1) return 0;
  return SSL_check_private_key(ssl) == 1 ? 1 : 0;
}

// One scrape connection: the TLS handshake (bounded in time), then bytes relayed both ways until
// either side ends. Every handler runs on the front's one I/O thread.
class Connection final : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, asio::ssl::context& ssl, tcp::endpoint inner, std::atomic<int>& open)
      : client_(std::move(socket), ssl),
        upstream_(client_.get_executor()),
        deadline_(client_.get_executor()),
        inner_(inner),
        open_(open) {
    ++open_;
  }
  ~Connection() { --open_; }

  void Start() {
    auto self = shared_from_this();
    deadline_.expires_after(std::chrono::seconds(MetricsTlsFront::kHandshakeSeconds));
    deadline_.async_wait([self](boost::system::error_code ec) {
      if (!ec) self->Close();
    });
    client_.async_handshake(asio::ssl::stream_base::server, [self](boost::system::error_code ec) {
      if (ec) return self->Close();
      self->deadline_.cancel();
      self->upstream_.async_connect(self->inner_, [self](boost::system::error_code ec) {
        if (ec) return self->Close();
        self->RelayUp();
        self->RelayDown();
      });
    });
  }

 private:
  void RelayUp() {  // client -> civetweb
    auto self = shared_from_this();
    client_.async_read_some(asio::buffer(up_), [self](boost::system::error_code ec, size_t n) {
      if (ec) return self->Close();
      asio::async_write(self->upstream_, asio::buffer(self->up_, n), [self](boost::system::error_code ec, size_t) {
        if (ec) return self->Close();
        self->RelayUp();
      });
    });
  }

  void RelayDown() {  // civetweb -> client; its end of the connection ends the TLS session cleanly
    auto self = shared_from_this();
    upstream_.async_read_some(asio::buffer(down_), [self](boost::system::error_code ec, size_t n) {
      if (ec == asio::error::eof) return self->ShutDown();
      if (ec) return self->Close();
      asio::async_write(self->client_, asio::buffer(self->down_, n), [self](boost::system::error_code ec, size_t) {
        if (ec) return self->Close();
        self->RelayDown();
      });
    });
  }

  void ShutDown() {
    auto self = shared_from_this();
    deadline_.expires_after(std::chrono::seconds(MetricsTlsFront::kHandshakeSeconds));
    deadline_.async_wait([self](boost::system::error_code ec) {
      if (!ec) self->Close();
    });
    client_.async_shutdown([self](boost::system::error_code) { self->Close(); });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    deadline_.cancel();
    client_.lowest_layer().close(ignored);
    upstream_.close(ignored);
  }

  asio::ssl::stream<tcp::socket> client_;
  tcp::socket upstream_;
  asio::steady_timer deadline_;
  tcp::endpoint inner_;
  std::atomic<int>& open_;
  bool closed_ = false;
  std::array<char, 16384> up_;
  std::array<char, 16384> down_;
};

class Front final : public MetricsTlsFront {
 public:
  Front(CertificateFiles files, int inner_port)
      : files_(std::move(files)),
        ssl_(asio::ssl::context::tls_server),
        acceptor_(io_),
        inner_(asio::ip::address_v4::loopback(), static_cast<uint16_t>(inner_port)) {}

  ~Front() override {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Listen(const std::string& address) {
    SSL_CTX* context = ssl_.native_handle();
    if (SSL_CTX_set_min_proto_version(context, TLS1_2_VERSION) != 1) return absl::InternalError("TLS 1.2 minimum");
    // Checked once now so a bad file stops the start; afterwards the callback reads them per handshake.
    if (SSL_CTX_use_certificate_chain_file(context, files_.cert_file.c_str()) != 1) {
      return FileError(files_.cert_file, "holds no PEM certificate chain");
    }
    if (SSL_CTX_use_PrivateKey_file(context, files_.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(context) != 1) {
      return FileError(files_.key_file, "is not the PEM key of the certificate");
    }
    SSL_CTX_set_cert_cb(context, LoadCertificate, &files_);

    const size_t colon = address.rfind(':');
    int port = 0;
    if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("metrics address '", address, "' is not HOST:PORT"));
    }
    std::string host = address.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    boost::system::error_code ec;
    tcp::resolver resolver(io_);
    auto endpoints = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
    if (ec || endpoints.empty()) return Unavailable(address, ec);
    const tcp::endpoint endpoint = *endpoints.begin();
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return Unavailable(address, ec);
    port_ = acceptor_.local_endpoint().port();
    Accept();
    thread_ = std::thread([this] { io_.run(); });
    return absl::OkStatus();
  }

  int port() const override { return port_; }

 private:
  static absl::Status FileError(const std::string& file, absl::string_view why) {
    return MakeError(absl::StatusCode::kFailedPrecondition, "TLS_FILE_INVALID", absl::StrCat("'", file, "' ", why),
                     {{"file", file}});
  }
  static absl::Status Unavailable(const std::string& address, const boost::system::error_code& ec) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on '", address, "': ", ec.message()));
  }

  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec && open_ < kMaxConnections) {
        std::make_shared<Connection>(std::move(socket), ssl_, inner_, open_)->Start();
      }  // else the socket closes here: too many connections
      Accept();
    });
  }

  CertificateFiles files_;
  asio::io_context io_;
  asio::ssl::context ssl_;
  tcp::acceptor acceptor_;
  tcp::endpoint inner_;
  std::atomic<int> open_{0};
  int port_ = 0;
  std::thread thread_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsTlsFront>> MetricsTlsFront::Start(const std::string& address, int inner_port,
                                                                        const std::string& cert_file,
                                                                        const std::string& key_file) {
  auto front = std::make_unique<Front>(CertificateFiles{cert_file, key_file}, inner_port);
  if (absl::Status s = front->Listen(address); !s.ok()) return s;
  return front;
}

}  // namespace modelsmith
