// The trainer-facing end of a DataConstructor: a ZeroMQ ROUTER socket on
// its own thread. Requests go to a handler (the constructor actor's
// mailbox); replies come back through `send`, which any thread may call.
// The server owns its sockets and thread; destroying it stops both.
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "transport/wire.hpp"

namespace overlord::transport {

class batch_server {
 public:
  // Called on the server thread for every well-formed request. `client`
  // is the ZeroMQ routing id to pass back to `send`.
  using request_handler =
      std::function<void(const std::string& client, const request& value)>;
  // Called on the server thread for a frame that is not a valid Request.
  using reject_handler = std::function<void(const std::string& reason)>;

  explicit batch_server(zmq::context_t& context);
  ~batch_server();

  batch_server(const batch_server&) = delete;
  batch_server& operator=(const batch_server&) = delete;

  // Binds `endpoint` (e.g. "tcp://127.0.0.1:5555"). Throws
  // overlord::error(io_error) when the address cannot be bound.
  void bind(const std::string& endpoint);

  // Starts the server thread, which passes requests to the handlers.
  void start(request_handler on_request, reject_handler on_reject);

  // Queues `payload` for `client`. Thread-safe; never blocks on the network.
  void send(const std::string& client, zmq::message_t payload);

  // Stops the thread and closes the sockets. Idempotent.
  void stop();

 private:
  void run();

  zmq::context_t& context_;
  request_handler on_request_;
  reject_handler on_reject_;
  std::string control_endpoint_;
  zmq::socket_t router_;
  zmq::socket_t control_in_;
  zmq::socket_t control_out_;
  std::mutex control_mutex_;
  std::thread thread_;
  std::atomic<bool> running_{false};
};

}  // namespace overlord::transport
