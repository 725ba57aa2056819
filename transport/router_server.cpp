#include "transport/router_server.hpp"

#include <atomic>

#include "common/error.hpp"

namespace overlord::transport {

router_server::router_server(zmq::context_t& context,
                             int64_t max_request_bytes,
                             const curve_keys* curve)
    : context_(context),
      max_request_bytes_(max_request_bytes),
      router_(context, zmq::socket_type::router),
      control_in_(context, zmq::socket_type::pull),
      control_out_(context, zmq::socket_type::push) {
  // A process-wide counter keeps inproc names unique even when a new
  // server reuses the address of a destroyed one.
  static std::atomic<uint64_t> servers{0};
  control_endpoint_ = "inproc://router-server-" + std::to_string(++servers);
  control_in_.bind(control_endpoint_);
  control_out_.connect(control_endpoint_);
  router_.set(zmq::sockopt::linger, 0);
  router_.set(zmq::sockopt::maxmsgsize, max_request_bytes);
  if (curve)
    set_curve_server(router_, *curve);
  control_out_.set(zmq::sockopt::linger, 0);
  control_in_.set(zmq::sockopt::linger, 0);
}

router_server::~router_server() { stop(); }

std::string router_server::bind(const std::string& endpoint) {
  try {
    router_.bind(endpoint);
  } catch (const zmq::error_t& e) {
    throw error(errc::io_error, "cannot bind " + endpoint + ": " + e.what() +
                                    "; choose a free port or stop the "
                                    "process that holds it");
  }
  endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  return endpoint_;
}

void router_server::start(frame_handler on_frame) {
  on_frame_ = std::move(on_frame);
  running_ = true;
  thread_ = std::thread([this] { run(); });
}

void router_server::send(const std::string& client, zmq::message_t payload) {
  std::lock_guard<std::mutex> guard(control_mutex_);
  if (!running_)
    return;
  control_out_.send(zmq::buffer(client), zmq::send_flags::sndmore);
  control_out_.send(std::move(payload), zmq::send_flags::none);
}

void router_server::stop() {
  {
    std::lock_guard<std::mutex> guard(control_mutex_);
    if (!running_)
      return;
    running_ = false;
    // An empty routing id stops the server thread.
    control_out_.send(zmq::message_t(), zmq::send_flags::sndmore);
    control_out_.send(zmq::message_t(), zmq::send_flags::none);
  }
  if (thread_.joinable())
    thread_.join();
  router_.close();
  control_in_.close();
  control_out_.close();
}

void router_server::run() {
  zmq::pollitem_t items[] = {
      {static_cast<void*>(router_), 0, ZMQ_POLLIN, 0},
      {static_cast<void*>(control_in_), 0, ZMQ_POLLIN, 0},
  };
  for (;;) {
    zmq::poll(items, 2, std::chrono::milliseconds(-1));

    if (items[1].revents & ZMQ_POLLIN) {
      zmq::message_t client;
      zmq::message_t payload;
      (void)control_in_.recv(client);
      (void)control_in_.recv(payload);
      if (client.size() == 0)
        return;
      router_.send(client, zmq::send_flags::sndmore);
      router_.send(payload, zmq::send_flags::none);
    }

    if (items[0].revents & ZMQ_POLLIN) {
      zmq::message_t client;
      zmq::message_t frame;
      (void)router_.recv(client);
      (void)router_.recv(frame);
      // Drain any extra frames so the next read starts a new message.
      bool extra_frames = false;
      while (frame.more()) {
        zmq::message_t extra;
        (void)router_.recv(extra);
        frame.move(extra);
        extra_frames = true;
      }
      // Requests are one frame, and libzmq already bounds each frame by
      // ZMQ_MAXMSGSIZE; the size check keeps that bound here too.
      if (extra_frames ||
          static_cast<int64_t>(frame.size()) > max_request_bytes_) {
        ++rejected_frames_;
        continue;
      }
      std::string id(static_cast<const char*>(client.data()), client.size());
      on_frame_(id, std::string_view(static_cast<const char*>(frame.data()),
                                     frame.size()));
    }
  }
}

}  // namespace overlord::transport
