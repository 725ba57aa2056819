// A ZeroMQ ROUTER socket on its own thread, the server end of both
// trainer-facing batch serving and loader-node payload serving. Each
// incoming frame goes to a handler (which forwards it to an actor's
// mailbox); replies come back through `send`, which any thread may call.
// The server owns its sockets and thread; destroying it stops both.
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "transport/curve.hpp"

namespace overlord::transport {

class router_server {
 public:
  // Called on the server thread for every request frame. `client` is the
  // ZeroMQ routing id to pass back to `send`.
  using frame_handler =
      std::function<void(const std::string& client, std::string_view frame)>;

  // `max_request_bytes` bounds incoming frames; ZeroMQ drops a peer that
  // sends more instead of allocating for it. With `curve`, the socket is a
  // CURVE server and the context's zap_handler checks every client.
  router_server(zmq::context_t& context, int64_t max_request_bytes,
                const curve_keys* curve = nullptr);
  ~router_server();

  router_server(const router_server&) = delete;
  router_server& operator=(const router_server&) = delete;

  // Binds `endpoint` (e.g. "tcp://127.0.0.1:5555", or port 0 for any free
  // port) and returns the bound endpoint. Throws overlord::error(io_error)
  // when the address cannot be bound.
  std::string bind(const std::string& endpoint);

  // The endpoint bound last, with the actual port.
  const std::string& endpoint() const { return endpoint_; }

  // Starts the server thread, which passes frames to the handler.
  void start(frame_handler on_frame);

  // Queues `payload` for `client`. Thread-safe; never blocks on the network.
  void send(const std::string& client, zmq::message_t payload);

  // Stops the thread and closes the sockets. Idempotent.
  void stop();

  // Messages dropped without reaching the handler: ones with more than
  // one frame, or larger than max_request_bytes. Thread-safe.
  // NOTE: a message over ZMQ_MAXMSGSIZE never arrives, because libzmq
  // closes that peer's connection after reading the size field, so it is
  // not counted here.
  uint64_t rejected_frames() const { return rejected_frames_; }

 private:
  void run();

  zmq::context_t& context_;
  int64_t max_request_bytes_;
  std::atomic<uint64_t> rejected_frames_{0};
  frame_handler on_frame_;
  std::string endpoint_;
  std::string control_endpoint_;
  zmq::socket_t router_;
  zmq::socket_t control_in_;
  zmq::socket_t control_out_;
  std::mutex control_mutex_;
  std::thread thread_;
  std::atomic<bool> running_{false};
};

}  // namespace overlord::transport
