// PostgresServer: a private PostgreSQL for one test binary, from Debian's `postgresql` package
// (initdb + pg_ctl under /usr/lib/postgresql/N/bin), in a temp directory, on a free loopback
// port, with trust authentication for the superuser "modelsmith" on 127.0.0.1 only. PostgreSQL
// refuses to run as root, so as root it runs as "nobody". fsync is off for speed (the tests
// exercise the protocol and the SQL, not the disk); commits stay synchronous, so a stopped server
// (an immediate shutdown, as a crash) keeps every acknowledged row in the page cache.
#ifndef MODELSMITH_TESTS_SUPPORT_POSTGRES_SERVER_H_
#define MODELSMITH_TESTS_SUPPORT_POSTGRES_SERVER_H_

#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace modelsmith::testing {

class PostgresServer {
 public:
  // Starts the server (waits until it accepts connections); see error() when it did not.
  PostgresServer();
  // Stops it (immediate shutdown) and removes its files.
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  bool started() const { return port_ > 0; }
  const std::string& error() const { return error_; }
  int port() const { return port_; }

  // Creates the empty database `name` and returns its URL; "" (and error()) on failure.
  std::string NewDatabase(const std::string& name);
  // postgresql://modelsmith@127.0.0.1:PORT/NAME
  std::string Url(const std::string& name) const;
  // Runs `sql` in database `name` with psql; returns its output, or "" (and error()) on failure.
  std::string Psql(const std::string& name, const std::string& sql);
  // Stops the server now (a crash, as far as clients see) / starts it again on the same port.
  void Stop();
  bool Restart();

 private:
  bool Start();
  // The command as the user the server runs as.
  std::vector<std::string> AsServerUser(std::vector<std::string> argv) const;

  TempDir dir_;
  std::string bin_;
  std::string data_;
  int port_ = 0;
  std::string error_;
};

}  // namespace modelsmith::testing

#endif  // MODELSMITH_TESTS_SUPPORT_POSTGRES_SERVER_H_
