#include "transport/batch_server.hpp"

#include <atomic>

#include "common/error.hpp"

namespace overlord::transport {

namespace {

// Requests are a few dozen bytes; anything far larger is not a client of
// ours, and ZeroMQ drops the peer instead of allocating for it.
constexpr int64_t max_request_bytes = 4096;

}  // namespace

batch_server::batch_server(zmq::context_t& context)
    : context_(context),
      router_(context, zmq::socket_type::router),
      control_in_(context, zmq::socket_type::pull),
      control_out_(context, zmq::socket_type::push) {
  // A process-wide counter keeps inproc names unique even when a new
  // server reuses the address of a destroyed one.
  static std::atomic<uint64_t> servers{0};
  control_endpoint_ = "inproc://batch-server-" + std::to_string(++servers);
  control_in_.bind(control_endpoint_);
  control_out_.connect(control_endpoint_);
  router_.set(zmq::sockopt::linger, 0);
  router_.set(zmq::sockopt::maxmsgsize, max_request_bytes);
  control_out_.set(zmq::sockopt::linger, 0);
  control_in_.set(zmq::sockopt::linger, 0);
}

batch_server::~batch_server() { stop(); }

void batch_server::bind(const std::string& endpoint) {
  try {
    router_.bind(endpoint);
  } catch (const zmq::error_t& e) {
    throw error(errc::io_error, "cannot bind " + endpoint + ": " + e.what() +
                                    "; choose a free port (base_port) or "
                                    "stop the process that holds it");
  }
}

void batch_server::start(request_handler on_request, reject_handler on_reject) {
  on_request_ = std::move(on_request);
  on_reject_ = std::move(on_reject);
  running_ = true;
  thread_ = std::thread([this] { run(); });
}

void batch_server::send(const std::string& client, zmq::message_t payload) {
  std::lock_guard<std::mutex> guard(control_mutex_);
  if (!running_)
    return;
  control_out_.send(zmq::buffer(client), zmq::send_flags::sndmore);
  control_out_.send(std::move(payload), zmq::send_flags::none);
}

void batch_server::stop() {
  {
    std::lock_guard<std::mutex> guard(control_mutex_);
    if (!running_)
      return;
    running_ = false;
    // An empty routing id tells the server thread to stop.
    control_out_.send(zmq::message_t(), zmq::send_flags::sndmore);
    control_out_.send(zmq::message_t(), zmq::send_flags::none);
  }
  if (thread_.joinable())
    thread_.join();
  router_.close();
  control_in_.close();
  control_out_.close();
}

void batch_server::run() {
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
      while (frame.more()) {
        zmq::message_t extra;
        (void)router_.recv(extra);
        frame.move(extra);
      }
      auto decoded = decode_request(
          std::string_view(static_cast<const char*>(frame.data()), frame.size()));
      std::string id(static_cast<const char*>(client.data()), client.size());
      if (decoded)
        on_request_(id, *decoded);
      else
        on_reject_("malformed request frame of " +
                   std::to_string(frame.size()) + " bytes");
    }
  }
}

}  // namespace overlord::transport
