#include "client/client.hpp"

#include <atomic>
#include <cstring>

#include "common/error.hpp"

namespace overlord::client {

received_batch::received_batch(zmq::message_t message)
    : message_(std::move(message)) {
  auto* reply = transport::verify_reply(message_.data(), message_.size());
  if (reply == nullptr)
    throw error(errc::invalid_input,
                "received a malformed reply of " +
                    std::to_string(message_.size()) + " bytes");
  if (auto* failure = reply->body_as_ErrorReply()) {
    auto code = static_cast<errc>(failure->code());
    throw error(code, std::string("server error: ") +
                          (failure->message() ? failure->message()->str()
                                              : std::string("(no message)")));
  }
  batch_ = reply->body_as_Batch();
  if (batch_ == nullptr)
    throw error(errc::invalid_input, "reply carries neither batch nor error");
  // Trainers index the arrays by rows and row_length and the boundaries
  // by row_splits, so a batch that disagrees with its own shape would make
  // them read past the message.
  auto problem = transport::check_batch_layout(*batch_);
  if (!problem.empty())
    throw error(errc::invalid_input,
                "received a malformed batch for step " +
                    std::to_string(batch_->step()) + ": " + problem);
}

batch_client::batch_client(client_options options)
    : options_(std::move(options)),
      context_(1),
      socket_(context_, zmq::socket_type::dealer),
      next_step_(options_.first_step),
      next_request_(options_.first_step) {
  if (options_.prefetch == 0)
    throw error(errc::invalid_config, "prefetch must be at least 1");
  connect(options_.endpoint);
  node_ = options_.node;
}

void batch_client::connect(const std::string& endpoint) {
  zmq::socket_t socket(context_, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  static std::atomic<uint64_t> monitors{0};
  auto monitor_endpoint =
      "inproc://client-monitor-" + std::to_string(++monitors);
  const int events = ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
  if (zmq_socket_monitor(socket.handle(), monitor_endpoint.c_str(), events) !=
      0)
    throw error(errc::internal, "cannot monitor the client socket");
  zmq::socket_t monitor(context_, zmq::socket_type::pair);
  monitor.set(zmq::sockopt::linger, 0);
  monitor.connect(monitor_endpoint);
  if (!options_.curve_secret_key.empty())
    transport::set_curve_client(socket, options_.curve_secret_key,
                                options_.curve_public_key,
                                options_.curve_server_key);
  try {
    socket.connect(endpoint);
  } catch (const zmq::error_t& e) {
    throw error(errc::invalid_config, "cannot connect to '" + endpoint +
                                          "': " + e.what() +
                                          "; use tcp://HOST:PORT");
  }
  // Replies still on their way to the old socket are dropped with it;
  // fail_over() requests every step not received again.
  socket_ = std::move(socket);
  monitor_ = std::move(monitor);
  endpoint_ = endpoint;
  handshake_done_ = false;
  failed_handshakes_ = 0;
}

bool batch_client::fail_over() {
  // Endpoints with the id of their node, "" when unknown.
  std::vector<std::pair<std::string, std::string>> candidates;
  if (options_.resolve) {
    try {
      candidates = options_.resolve();
    } catch (const error&) {
      // The lookup failed too: fall back to the endpoints known already.
    }
  }
  candidates.emplace_back(options_.endpoint, options_.node);
  for (const auto& other : options_.fallback_endpoints)
    candidates.emplace_back(other, std::string());

  // The first candidate other than the silent endpoint.
  std::string next;
  std::string next_node;
  for (const auto& [candidate, node] : candidates)
    if (candidate != endpoint_) {
      next = candidate;
      next_node = node;
      break;
    }
  if (next.empty())
    return false;

  connect(next);
  failovers_++;
  node_ = next_node;
  // Ask the new endpoint again for every step requested but not received.
  // Steps are requested by number, so no batch is lost or repeated.
  in_flight_ = 0;
  for (uint64_t step = next_step_; step < next_request_; ++step) {
    if (ahead_.count(step))
      continue;
    auto frame = transport::encode_request(
        {step, options_.rank, options_.cp_rank, next_step_});
    socket_.send(zmq::buffer(frame), zmq::send_flags::none);
    ++in_flight_;
  }
  return true;
}

batch_client::~batch_client() = default;

bool batch_client::read_monitor_event() {
  // An event is two frames: a 16-bit event id with a 32-bit value, then
  // the address.
  zmq::message_t event;
  zmq::message_t address;
  (void)monitor_.recv(event);
  if (event.more())
    (void)monitor_.recv(address);
  uint16_t id = 0;
  uint32_t value = 0;
  if (event.size() >= 6) {
    std::memcpy(&id, event.data(), sizeof id);
    std::memcpy(&value, static_cast<const char*>(event.data()) + 2,
                sizeof value);
  }
  switch (id) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
      handshake_done_ = true;
      failed_handshakes_ = 0;
      return false;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      throw error(errc::invalid_config,
                  "the server at " + endpoint_ + " rejected this client (ZAP "
                  "status " + std::to_string(value) + "): add the client's "
                  "CURVE public key to the server's --curve-authorized file, "
                  "or give the client the key listed there");
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
      ++failed_handshakes_;
      return false;
    case ZMQ_EVENT_DISCONNECTED:
      if (!handshake_done_)
        ++failed_handshakes_;
      handshake_done_ = false;
      return true;
    default:
      return false;
  }
}

void batch_client::top_up() {
  while (in_flight_ + ahead_.size() < options_.prefetch) {
    auto frame = transport::encode_request(
        {next_request_, options_.rank, options_.cp_rank, next_step_});
    socket_.send(zmq::buffer(frame), zmq::send_flags::none);
    ++next_request_;
    ++in_flight_;
  }
}

void batch_client::accept(zmq::message_t message) {
  if (in_flight_ > 0)
    --in_flight_;
  received_batch batch(std::move(message));
  uint64_t step = batch.batch().step();
  if (step < next_step_ || ahead_.count(step))
    return;  // a second copy after a failover; the first one counts
  if (step >= next_request_)
    throw error(errc::invalid_input,
                "received step " + std::to_string(step) +
                    " that was not requested");
  ahead_.emplace(step, std::move(batch));
}

void batch_client::collect_ready() {
  for (;;) {
    zmq::message_t message;
    if (!socket_.recv(message, zmq::recv_flags::dontwait))
      return;
    accept(std::move(message));
  }
}

received_batch batch_client::next() {
  top_up();
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + options_.timeout;
  const bool can_fail_over = options_.failover_timeout.count() > 0 &&
                             (!options_.fallback_endpoints.empty() ||
                              options_.resolve);
  auto switch_at = start + options_.failover_timeout;
  while (ahead_.count(next_step_) == 0) {
    auto now = std::chrono::steady_clock::now();
    auto until = can_fail_over ? std::min(deadline, switch_at) : deadline;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now);
    zmq::pollitem_t items[] = {
        {static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0},
        {static_cast<void*>(monitor_), 0, ZMQ_POLLIN, 0},
    };
    bool ready = false;
    bool event = false;
    bool disconnected = false;
    if (left.count() > 0 && zmq::poll(items, 2, left) > 0) {
      ready = items[0].revents & ZMQ_POLLIN;
      if (items[1].revents & ZMQ_POLLIN) {
        event = true;
        disconnected = read_monitor_event();
      }
    }
    if (!ready && event && !disconnected)
      continue;  // a handshake event only
    if (!ready && disconnected && can_fail_over) {
      // The server closed the connection (its process died): move now.
      fail_over();
      switch_at = std::chrono::steady_clock::now() + options_.failover_timeout;
      continue;
    }
    if (!ready && disconnected)
      continue;  // ZeroMQ reconnects by itself; keep waiting
    if (!ready && can_fail_over &&
        std::chrono::steady_clock::now() < deadline) {
      // The endpoint was silent for failover_timeout: move to another one
      // if there is one, and keep waiting until the overall deadline.
      fail_over();
      switch_at = std::chrono::steady_clock::now() + options_.failover_timeout;
      continue;
    }
    if (!ready)
      throw error(errc::timeout,
                  "rank " + std::to_string(options_.rank) + " at " +
                      endpoint_ +
                      (node_.empty() ? "" : " (node " + node_ + ")") +
                      " sent no batch for step " +
                      std::to_string(next_step_) + " within " +
                      std::to_string(options_.timeout.count()) +
                      (handshake_done_
                           ? " ms, although connected; the planner plans at "
                             "most plan_ahead steps past the slowest rank, so "
                             "check that every rank has a trainer pulling, "
                             "and that the loaders keep up (overlordctl "
                             "status)"
                           : " ms; check that the server is running") +
                      (failed_handshakes_ > 0
                           ? " (the connection closed " +
                                 std::to_string(failed_handshakes_) +
                                 " time(s) without a completed handshake: "
                                 "check that client and server both use "
                                 "CURVE, and --curve-server-public)"
                           : std::string()));
    zmq::message_t message;
    (void)socket_.recv(message);
    accept(std::move(message));
  }
  auto found = ahead_.find(next_step_);
  received_batch batch = std::move(found->second);
  ahead_.erase(found);
  ++next_step_;
  top_up();
  return batch;
}

}  // namespace overlord::client
