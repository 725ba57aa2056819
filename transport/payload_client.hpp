// The fetching end of the payload path: DEALER sockets to loader nodes'
// payload servers, driven by one thread. Any thread may queue a request;
// replies go to a handler on the client's thread (which forwards them to
// the constructor actor's mailbox). The client owns its sockets and
// thread; destroying it stops both.
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "transport/curve.hpp"
#include "transport/payload_wire.hpp"

namespace overlord::transport {

class payload_client {
 public:
  using reply_handler = std::function<void(payload_reply reply)>;

  // With `curve`, every connection is a CURVE client of servers with
  // curve->server_public_key. A reply over `max_reply_bytes` (-1: no
  // limit) closes that connection in libzmq before it is allocated.
  payload_client(zmq::context_t& context, reply_handler on_reply,
                 const curve_keys* curve = nullptr,
                 int64_t max_reply_bytes = -1);
  ~payload_client();

  payload_client(const payload_client&) = delete;
  payload_client& operator=(const payload_client&) = delete;

  // Queues `value` for the payload server at `endpoint`, connecting to it
  // on first use. Thread-safe; never blocks on the network.
  void request(const std::string& endpoint, const payload_request& value);

  // Stops the thread and closes the sockets. Idempotent.
  void stop();

 private:
  void run();

  zmq::context_t& context_;
  reply_handler on_reply_;
  std::optional<curve_keys> curve_;
  int64_t max_reply_bytes_;
  std::string control_endpoint_;
  zmq::socket_t control_in_;
  zmq::socket_t control_out_;
  std::mutex control_mutex_;
  std::thread thread_;
  std::atomic<bool> running_{false};
};

}  // namespace overlord::transport
