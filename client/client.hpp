// Trainer-side client of one rank's DataConstructor. It keeps up to
// `prefetch` requests in flight (one credit per request, so the server
// never sends more than that), and hands batches out in step order.
// One client per thread; it owns its ZeroMQ socket.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <functional>
#include <vector>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "transport/curve.hpp"
#include "transport/wire.hpp"

namespace overlord::client {

struct client_options {
  std::string endpoint;  // e.g. "tcp://127.0.0.1:5555"
  // Other endpoints of the same rank (its shadow), tried in turn when
  // `endpoint` sends nothing for `failover_timeout`.
  std::vector<std::string> fallback_endpoints;
  std::chrono::milliseconds failover_timeout{3000};
  // Called before each failover for the rank's current endpoints, primary
  // first, each with the id of the node serving it ("" when unknown). A
  // planner lookup, for example. May be empty.
  std::function<std::vector<std::pair<std::string, std::string>>()> resolve;
  uint32_t rank = 0;
  uint32_t cp_rank = 0;   // context-parallel slice wanted
  std::string node;       // node id serving the endpoint, for messages
  uint32_t prefetch = 2;  // requests in flight
  std::chrono::milliseconds timeout{30000};
  uint64_t first_step = 0;
  // CURVE: this client's key pair and the server's public key (Z85). All
  // empty: no CURVE.
  std::string curve_secret_key;
  std::string curve_public_key;
  std::string curve_server_key;
};

// A received batch. It owns the ZeroMQ message, and `batch()` reads the
// FlatBuffers table in place without copying, images included:
// `batch().images()` lists each image with its row, first patch position
// and CHW 8-bit pixels, which transport::normalise_image turns into the
// normalised float32 values a vision encoder takes. The constructor
// throws overlord::error:
// invalid_input for a frame that fails the verifier or a batch that fails
// transport::check_batch_layout, and the server's code for an error reply.
class received_batch {
 public:
  explicit received_batch(zmq::message_t message);

  const wire::Batch& batch() const { return *batch_; }
  const void* data() const { return message_.data(); }
  size_t size() const { return message_.size(); }

 private:
  zmq::message_t message_;
  const wire::Batch* batch_;
};

class batch_client {
 public:
  explicit batch_client(client_options options);
  ~batch_client();

  batch_client(const batch_client&) = delete;
  batch_client& operator=(const batch_client&) = delete;

  // Returns the batch of the next step. Throws overlord::error with code
  // timeout when the server sends no reply within the timeout, and with
  // the server's code when it replies with an error.
  received_batch next();

  // The step the next call to next() returns.
  uint64_t next_step() const { return next_step_; }

  // Requests sent whose replies have not arrived yet.
  uint32_t in_flight() const { return in_flight_; }

  // Batches received ahead of the one next() will return.
  size_t buffered() const { return ahead_.size(); }

  // Receives, without waiting, every reply that has already arrived, so
  // that buffered() counts the batches ready for the trainer.
  void collect_ready();

  // The endpoint requests go to now.
  const std::string& endpoint() const { return endpoint_; }

  // The node id serving endpoint(). It is options.node for the first
  // endpoint, and after a failover the node that `resolve` named for the
  // new one. It is empty when neither names it.
  const std::string& node() const { return node_; }

  // Times this client moved to another endpoint.
  uint32_t failovers() const { return failovers_; }

 private:
  void top_up();
  void accept(zmq::message_t message);
  void connect(const std::string& endpoint);
  // Reads one socket monitor event; returns true when the connection was
  // lost. Throws overlord::error when the server rejected this client.
  bool read_monitor_event();
  bool fail_over();

  client_options options_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  // Reports the socket's connection losses (a ZeroMQ socket monitor), so
  // a dead server is noticed at once instead of after failover_timeout.
  zmq::socket_t monitor_;
  std::string endpoint_;
  std::string node_;
  uint32_t failovers_ = 0;
  // Connections the server closed during the handshake since the last
  // successful one (a wrong server key, or CURVE on one side only).
  uint32_t failed_handshakes_ = 0;
  bool handshake_done_ = false;
  uint64_t next_step_;
  uint64_t next_request_;
  uint32_t in_flight_ = 0;
  std::map<uint64_t, received_batch> ahead_;
};

}  // namespace overlord::client
