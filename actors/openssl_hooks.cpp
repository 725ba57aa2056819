// Wraps OpenSSL functions that CAF 0.17's OpenSSL module calls, for two
// reasons.
//
// Error queue. OpenSSL keeps one error queue per thread, and SSL_get_error
// reads it: if an earlier failure left an entry there, SSL_get_error
// reports SSL_ERROR_SSL for a call that only wanted more input. CAF runs
// every connection on its one multiplexer thread, calls SSL_get_error after
// each SSL_read, SSL_write, SSL_accept and SSL_connect that returns <= 0,
// and drains the queue only inside log statements that Debian's build
// compiles out. So one failed handshake on the planner port (a node from
// another CA, a port scan) left an entry behind, and the next
// non-blocking read on any healthy link was taken for a fatal error and
// the link was closed. OpenSSL's documentation requires an empty queue
// before each TLS I/O call, so the wrappers below clear it first.
//
// Handshake log. CAF drops a connection whose handshake fails without
// telling anyone, so an operator would never learn that a node with a
// wrong certificate tried to join. The SSL_CTX_new wrapper (CAF makes one
// context per connection) installs an info callback that reports failed
// handshakes with the peer's address and OpenSSL's reason, and the
// SSL_free wrapper reports handshakes that the peer abandoned.
//
// The wrappers work because the executable's definitions take precedence
// over libssl's for every shared library, and they call the real
// functions through dlsym(RTLD_NEXT). Link this file into executables
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
using ssl_io_function = int (*)(SSL*, void*, int);
using ssl_write_function = int (*)(SSL*, const void*, int);
using ssl_handshake_function = int (*)(SSL*);

template <class Function>
Function real_function(const char* name) {
  return reinterpret_cast<Function>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" SSL_CTX* SSL_CTX_new(const SSL_METHOD* method) {
  static auto real = real_function<ssl_ctx_new_function>("SSL_CTX_new");
  if (real == nullptr)
    return nullptr;
  SSL_CTX* context = real(method);
  if (context != nullptr)
    SSL_CTX_set_info_callback(context, on_tls_event);
  return context;
}

extern "C" void SSL_free(SSL* ssl) {
  static auto real = real_function<ssl_free_function>("SSL_free");
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

extern "C" int SSL_read(SSL* ssl, void* buffer, int size) {
  static auto real = real_function<ssl_io_function>("SSL_read");
  ERR_clear_error();
  return real(ssl, buffer, size);
}

extern "C" int SSL_write(SSL* ssl, const void* buffer, int size) {
  static auto real = real_function<ssl_write_function>("SSL_write");
  ERR_clear_error();
  return real(ssl, buffer, size);
}

extern "C" int SSL_accept(SSL* ssl) {
  static auto real = real_function<ssl_handshake_function>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

extern "C" int SSL_connect(SSL* ssl) {
  static auto real = real_function<ssl_handshake_function>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}
