// Transport security of CAF links (planner <-> nodes, overlordctl and
// overlord_pull lookups -> planner). CAF's own wire protocol has no
// authentication, so with certificates configured every link runs over
// TLS through CAF 0.17's OpenSSL module, and both ends verify the other's
// certificate against the configured CA (mutual TLS). Whether a process
// uses TLS is decided once, when its actor system is configured; the
// publish and connect helpers below then pick the matching middleman.
#pragma once

#include <caf/all.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace overlord::actors {

// PEM files of this process: its certificate (chain), its private key and
// the CA certificate that peers' certificates must be signed by.
struct tls_files {
  std::string certificate;
  std::string key;
  std::string ca;

  bool enabled() const {
    return !certificate.empty() || !key.empty() || !ca.empty();
  }
};

// Checks that all three files are given and readable, parse as PEM, that
// the key belongs to the certificate and that the certificate verifies
// against the CA. Throws overlord::error(invalid_config) naming the file
// and the fix. CAF itself loads the files only at the first connection,
// where a bad file would end the process without a useful message.
void check_tls_files(const tls_files& files);

// Loads CAF's OpenSSL module into `config` with `files` (after the
// middleman), so that publish_actor and connect_actor use TLS. Call
// check_tls_files first.
void enable_tls(caf::actor_system_config& config, const tls_files& files);

// True when `system` was configured by enable_tls.
bool tls_enabled(caf::actor_system& system);

// Publishes `actor` on `address`:`port` (0: any free port) over TLS when
// enabled, else over CAF's plain middleman. Returns the bound port.
caf::expected<uint16_t> publish_actor(caf::actor_system& system,
                                      const caf::actor& actor, uint16_t port,
                                      const std::string& address);

// Connects to the actor published at `host`:`port`, over TLS when
// enabled. Fails with sec::request_timeout when the peer completes no
// handshake within `timeout`, for example when it drops a TLS connection
// whose certificate it does not trust.
caf::expected<caf::actor> connect_actor(
    caf::actor_system& system, const std::string& host, uint16_t port,
    std::chrono::milliseconds timeout = std::chrono::seconds(10));

// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_address(const std::string& address);

// Throws overlord::error(invalid_config) when `address` is not a loopback
// address and `secured` is false, unless `insecure` is set. `what` names
// the listener and its missing protection ("the planner's CAF port without
// TLS"); `fix` names the flags that add it.
void require_secure_bind(const std::string& address, const std::string& what,
                         bool secured, bool insecure, const std::string& fix);

}  // namespace overlord::actors
