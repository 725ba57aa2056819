#include "client/client.hpp"

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
}

batch_client::batch_client(client_options options)
    : options_(std::move(options)),
      context_(1),
      socket_(context_, zmq::socket_type::dealer),
      next_step_(options_.first_step),
      next_request_(options_.first_step) {
  if (options_.prefetch == 0)
    throw error(errc::invalid_config, "prefetch must be at least 1");
  socket_.set(zmq::sockopt::linger, 0);
  try {
    socket_.connect(options_.endpoint);
  } catch (const zmq::error_t& e) {
    throw error(errc::invalid_config, "cannot connect to '" +
                                          options_.endpoint + "': " + e.what() +
                                          "; use tcp://HOST:PORT");
  }
}

batch_client::~batch_client() = default;

void batch_client::top_up() {
  while (in_flight_ + ahead_.size() < options_.prefetch) {
    auto frame = transport::encode_request(
        {next_request_, options_.rank, options_.cp_rank});
    socket_.send(zmq::buffer(frame), zmq::send_flags::none);
    ++next_request_;
    ++in_flight_;
  }
}

void batch_client::accept(zmq::message_t message) {
  --in_flight_;
  received_batch batch(std::move(message));
  uint64_t step = batch.batch().step();
  if (step < next_step_ || step >= next_request_ || ahead_.count(step))
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
  auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  while (ahead_.count(next_step_) == 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
    if (left.count() <= 0 || zmq::poll(&item, 1, left) == 0)
      throw error(errc::timeout,
                  "rank " + std::to_string(options_.rank) + " at " +
                      options_.endpoint +
                      (options_.node.empty() ? "" : " (node " + options_.node + ")") +
                      " sent no batch for step " +
                      std::to_string(next_step_) + " within " +
                      std::to_string(options_.timeout.count()) +
                      " ms; check that the server is running");
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
