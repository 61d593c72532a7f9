#include "tests/support/postgres_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "tests/support/subprocess.h"

namespace modelsmith::testing {
namespace {

namespace fs = std::filesystem;

constexpr uid_t kNobody = 65534;

// The newest PostgreSQL under /usr/lib/postgresql.
std::string FindBinDir() {
  std::string best;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    if (fs::exists(entry.path() / "bin" / "pg_ctl") && entry.path().string() > best) best = entry.path().string();
  }
  return best.empty() ? "" : best + "/bin";
}

int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

}  // namespace

PostgresServer::PostgresServer() {
  bin_ = FindBinDir();
  if (bin_.empty()) {
    error_ = "no PostgreSQL under /usr/lib/postgresql (Debian's postgresql package; scripts/install-deps.sh)";
    return;
  }
  data_ = dir_.path() + "/pgdata";
  fs::create_directories(data_);
  if (geteuid() == 0) {
    // The server's user must reach its directory and own its data.
    fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
    if (chown(dir_.path().c_str(), kNobody, kNobody) != 0 || chown(data_.c_str(), kNobody, kNobody) != 0) {
      error_ = "cannot hand the data directory to nobody";
      return;
    }
  }
  fs::permissions(data_, fs::perms::owner_all);
  CommandResult init = RunCommand(AsServerUser({bin_ + "/initdb", "-D", data_, "-U", "modelsmith", "-A", "trust", "-E",
                                                "UTF8", "--no-sync", "--no-instructions"}));
  if (init.exit_code != 0) {
    error_ = "initdb: " + init.err + init.out;
    return;
  }
  const int port = FreeLoopbackPort();
  if (port == 0) {
    error_ = "no free loopback port";
    return;
  }
  port_ = port;
  if (!Start()) port_ = 0;
}

bool PostgresServer::Start() {
  const std::string options = "-p " + std::to_string(port_) + " -k " + dir_.path() +
                              " -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
                              " -c max_connections=200";
  CommandResult start = RunCommand(AsServerUser({bin_ + "/pg_ctl", "-D", data_, "-l", dir_.path() + "/server.log", "-w",
                                                 "-t", "60", "-o", options, "start"}),
                                   "", std::chrono::seconds(90));
  if (start.exit_code != 0) {
    error_ = "pg_ctl start: " + start.err + start.out;
    return false;
  }
  return true;
}

PostgresServer::~PostgresServer() {
  if (port_ > 0) Stop();
}

void PostgresServer::Stop() {
  RunCommand(AsServerUser({bin_ + "/pg_ctl", "-D", data_, "-m", "immediate", "-w", "stop"}), "",
             std::chrono::seconds(60));
}

bool PostgresServer::Restart() { return Start(); }

std::vector<std::string> PostgresServer::AsServerUser(std::vector<std::string> argv) const {
  if (geteuid() != 0) return argv;
  std::vector<std::string> wrapped = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

std::string PostgresServer::Url(const std::string& name) const {
  return "postgresql://modelsmith@127.0.0.1:" + std::to_string(port_) + "/" + name;
}

std::string PostgresServer::Psql(const std::string& name, const std::string& sql) {
  CommandResult r = RunCommand({bin_ + "/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                                "-p", std::to_string(port_), "-U", "modelsmith", "-d", name, "-c", sql});
  if (r.exit_code != 0) {
    error_ = "psql: " + r.err;
    return "";
  }
  return r.out.empty() ? "\n" : r.out;
}

std::string PostgresServer::NewDatabase(const std::string& name) {
  if (Psql("postgres", "CREATE DATABASE \"" + name + "\"").empty()) return "";
  return Url(name);
}

}  // namespace modelsmith::testing
