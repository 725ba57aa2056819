// Logs failed TLS handshakes of CAF's OpenSSL module. CAF 0.17 drops a
// connection whose handshake fails without telling anyone, so an operator
// would never learn that a node with a wrong certificate tried to join.
// This file wraps OpenSSL's SSL_CTX_new (CAF makes one context per
// connection) to install an info callback that reports failed handshakes
// with the peer's address and OpenSSL's reason, and SSL_free to report
// handshakes that the peer abandoned.
//
// The wrappers work because the executable's definitions take precedence
// over libssl's for every shared library, and they call the real
// functions through dlsym(RTLD_NEXT). Link it into executables
// only (alwayslink), never into a shared library.

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "common/log.hpp"

namespace {

std::string peer_address(const SSL* ssl) {
  int fd = SSL_get_fd(ssl);
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (fd < 0 ||
      getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0)
    return "unknown";
  char host[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (address.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&address);
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host);
    port = ntohs(v4->sin_port);
  } else if (address.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&address);
    inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof host);
    port = ntohs(v6->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

std::string failure_reason(const SSL* ssl) {
  long verify = SSL_get_verify_result(ssl);
  std::string reason;
  unsigned long code = ERR_peek_last_error();
  if (code != 0) {
    const char* text = ERR_reason_error_string(code);
    reason = text ? text : "error " + std::to_string(code);
  }
  if (verify != X509_V_OK) {
    if (!reason.empty())
      reason += "; ";
    reason += std::string("peer certificate: ") +
              X509_verify_cert_error_string(verify);
  }
  return reason.empty() ? "connection closed during the handshake" : reason;
}

// Handshakes in progress by connection, with the peer's address taken
// while the socket is still open. A peer that gives up (for example
// because it does not trust our certificate) closes the connection, and
// CAF then frees the session without reading OpenSSL's error, so the
// unfinished handshake is reported when the session is freed.
struct handshake_record {
  std::string peer;
  bool server = false;
  bool finished = false;  // a handshake completed once
  bool reported = false;
};

std::mutex records_mutex;
std::map<const SSL*, handshake_record> records;

std::atomic<uint64_t> failures{0};

void report(bool server, const std::string& peer, const std::string& reason) {
  uint64_t count = ++failures;
  // The first 20 failures one by one, then every 100th with the count.
  if (count > 20 && count % 100 != 0)
    return;
  overlord::get_logger("actors")->warn(
      "TLS handshake {} peer={}: {} ({} failures so far); both sides need "
      "TLS turned on and certificates signed by the same CA (--tls-ca)",
      server ? "rejected" : "failed", peer, reason, count);
}

void on_tls_event(const SSL* ssl, int where, int ret) {
  if (where & SSL_CB_HANDSHAKE_START) {
    std::lock_guard<std::mutex> guard(records_mutex);
    auto& record = records[ssl];
    if (record.peer.empty()) {
      record.peer = peer_address(ssl);
      record.server = SSL_is_server(const_cast<SSL*>(ssl)) == 1;
    }
    return;
  }
  if (where & SSL_CB_HANDSHAKE_DONE) {
    std::lock_guard<std::mutex> guard(records_mutex);
    records[ssl].finished = true;
    return;
  }
  // The end of a handshake attempt that failed: ret <= 0 without a
  // pending read or write (SSL_want is SSL_NOTHING after a fatal error).
  if (!(where & SSL_CB_EXIT) || ret > 0 || SSL_want(ssl) != SSL_NOTHING)
    return;
  std::string peer;
  {
    std::lock_guard<std::mutex> guard(records_mutex);
    auto& record = records[ssl];
    if (record.reported)
      return;
    record.reported = true;
    peer = record.peer.empty() ? peer_address(ssl) : record.peer;
  }
  report((where & SSL_ST_ACCEPT) != 0, peer, failure_reason(ssl));
}

using ssl_ctx_new_function = SSL_CTX* (*)(const SSL_METHOD*);
using ssl_free_function = void (*)(SSL*);

}  // namespace

extern "C" SSL_CTX* SSL_CTX_new(const SSL_METHOD* method) {
  static auto real =
      reinterpret_cast<ssl_ctx_new_function>(dlsym(RTLD_NEXT, "SSL_CTX_new"));
  if (real == nullptr)
    return nullptr;
  SSL_CTX* context = real(method);
  if (context != nullptr)
    SSL_CTX_set_info_callback(context, on_tls_event);
  return context;
}

extern "C" void SSL_free(SSL* ssl) {
  static auto real =
      reinterpret_cast<ssl_free_function>(dlsym(RTLD_NEXT, "SSL_free"));
  if (ssl != nullptr) {
    std::optional<handshake_record> unfinished;
    {
      std::lock_guard<std::mutex> guard(records_mutex);
      auto found = records.find(ssl);
      if (found != records.end()) {
        if (!found->second.reported && !found->second.finished)
          unfinished = found->second;
        records.erase(found);
      }
    }
    if (unfinished)
      report(unfinished->server, unfinished->peer,
             "the peer closed the connection during the handshake");
  }
  if (real != nullptr)
    real(ssl);
}
