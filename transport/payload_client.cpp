#include "transport/payload_client.hpp"

#include <memory>
#include <vector>

namespace overlord::transport {

payload_client::payload_client(zmq::context_t& context, reply_handler on_reply,
                               const curve_keys* curve,
                               int64_t max_reply_bytes)
    : context_(context),
      on_reply_(std::move(on_reply)),
      max_reply_bytes_(max_reply_bytes),
      control_in_(context, zmq::socket_type::pull),
      control_out_(context, zmq::socket_type::push) {
  if (curve)
    curve_ = *curve;
  static std::atomic<uint64_t> clients{0};
  control_endpoint_ = "inproc://payload-client-" + std::to_string(++clients);
  control_in_.set(zmq::sockopt::linger, 0);
  control_out_.set(zmq::sockopt::linger, 0);
  control_in_.bind(control_endpoint_);
  control_out_.connect(control_endpoint_);
  running_ = true;
  thread_ = std::thread([this] { run(); });
}

payload_client::~payload_client() { stop(); }

void payload_client::request(const std::string& endpoint,
                             const payload_request& value) {
  auto frame = encode_payload_request(value);
  std::lock_guard<std::mutex> guard(control_mutex_);
  if (!running_)
    return;
  control_out_.send(zmq::buffer(endpoint), zmq::send_flags::sndmore);
  control_out_.send(zmq::buffer(frame), zmq::send_flags::none);
}

void payload_client::stop() {
  {
    std::lock_guard<std::mutex> guard(control_mutex_);
    if (!running_)
      return;
    running_ = false;
    // An empty endpoint stops the thread.
    control_out_.send(zmq::message_t(), zmq::send_flags::sndmore);
    control_out_.send(zmq::message_t(), zmq::send_flags::none);
  }
  if (thread_.joinable())
    thread_.join();
  control_in_.close();
  control_out_.close();
}

void payload_client::run() {
  std::map<std::string, std::unique_ptr<zmq::socket_t>> dealers;
  std::vector<zmq::socket_t*> order;
  for (;;) {
    std::vector<zmq::pollitem_t> items;
    items.push_back({static_cast<void*>(control_in_), 0, ZMQ_POLLIN, 0});
    for (auto* dealer : order)
      items.push_back({static_cast<void*>(*dealer), 0, ZMQ_POLLIN, 0});
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(-1));

    if (items[0].revents & ZMQ_POLLIN) {
      zmq::message_t endpoint;
      zmq::message_t frame;
      (void)control_in_.recv(endpoint);
      (void)control_in_.recv(frame);
      if (endpoint.size() == 0)
        break;
      auto name = endpoint.to_string();
      auto& dealer = dealers[name];
      if (!dealer) {
        dealer = std::make_unique<zmq::socket_t>(context_,
                                                 zmq::socket_type::dealer);
        dealer->set(zmq::sockopt::linger, 0);
        dealer->set(zmq::sockopt::maxmsgsize, max_reply_bytes_);
        if (curve_)
          set_curve_client(*dealer, curve_->secret_key, curve_->public_key,
                           curve_->server_public_key);
        dealer->connect(name);
        order.push_back(dealer.get());
      }
      // A blocking send would wait for good once the queue to a server
      // that never completes its handshake is full, and this thread would
      // then miss the stop request. A request dropped here is sent again
      // when the caller's wait for its reply times out.
      (void)dealer->send(frame, zmq::send_flags::dontwait);
    }

    for (size_t i = 1; i < items.size(); ++i) {
      if (!(items[i].revents & ZMQ_POLLIN))
        continue;
      zmq::message_t reply;
      while (order[i - 1]->recv(reply, zmq::recv_flags::dontwait)) {
        auto decoded = decode_payload_reply(reply.data(), reply.size());
        if (decoded)
          on_reply_(std::move(*decoded));
      }
    }
  }
  for (auto& [name, dealer] : dealers)
    dealer->close();
}

}  // namespace overlord::transport
