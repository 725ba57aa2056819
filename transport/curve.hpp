// CURVE security for the ZeroMQ links: the trainer-facing constructor
// sockets, the loader nodes' payload servers and their clients. Keys are
// Z85 text (40 characters), one key per file, the format of
// zmq_curve_keypair and pyzmq's zmq.curve_keypair(). Servers accept only
// clients whose public key is in an authorized-keys file, checked by a ZAP
// handler (ZeroMQ's authentication protocol, RFC 27) on the context.
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <thread>

namespace overlord::transport {

struct curve_keys {
  std::string secret_key;  // this process's secret key (Z85)
  std::string public_key;  // derived from secret_key
  // Client side: the server's public key. Empty on a pure server.
  std::string server_public_key;
  // Server side: public keys of the clients that may connect.
  std::set<std::string> authorized;
};

// Throws overlord::error(invalid_config) when this libzmq was built
// without CURVE (zmq_has("curve") is false).
void require_curve();

// Reads the secret key in `path` and derives its public key. `flag` names
// the option in messages. Throws overlord::error(invalid_config).
curve_keys read_secret_key(const std::string& path, const std::string& flag);

// Reads one public key from `path`. Throws overlord::error(invalid_config).
std::string read_public_key(const std::string& path, const std::string& flag);

// Reads an authorized-keys file: one Z85 public key per line; blank lines
// and lines starting with '#' are ignored. Throws
// overlord::error(invalid_config) for an invalid line or an empty set.
std::set<std::string> read_authorized_keys(const std::string& path,
                                           const std::string& flag);

// Makes `socket` a CURVE server with `keys`; call before bind. Connections
// are then checked by the context's ZAP handler.
void set_curve_server(zmq::socket_t& socket, const curve_keys& keys);

// Makes `socket` a CURVE client of the server with `server_public_key`;
// call before connect.
void set_curve_client(zmq::socket_t& socket, const std::string& secret_key,
                      const std::string& public_key,
                      const std::string& server_public_key);

// Replies to ZAP requests from every CURVE server socket of `context`: a
// client whose public key is in `authorized` is accepted, every other
// one is rejected (status 400) and reported to `on_reject`. Only one
// handler may exist per context; it must exist before a CURVE server
// socket accepts connections, because libzmq 4.3 accepts every client when no
// handler is bound. The handler owns its socket and thread.
class zap_handler {
 public:
  // Called on the handler's thread with the client's address and Z85
  // public key.
  using reject_callback =
      std::function<void(const std::string& address, const std::string& key)>;

  zap_handler(zmq::context_t& context, std::set<std::string> authorized,
              reject_callback on_reject);
  ~zap_handler();

  zap_handler(const zap_handler&) = delete;
  zap_handler& operator=(const zap_handler&) = delete;

  uint64_t accepted() const { return accepted_; }
  uint64_t rejected() const { return rejected_; }

 private:
  void run();

  zmq::socket_t socket_;
  std::set<std::string> authorized_;
  reject_callback on_reject_;
  std::thread thread_;
  std::atomic<bool> running_{true};
  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> rejected_{0};
};

}  // namespace overlord::transport
