#include "tools/admin_client.hpp"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/io/all.hpp>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <thread>
#include <tuple>

#include "actors/messages.hpp"
#include "common/error.hpp"

namespace overlord::tools {

namespace {

class admin_config : public caf::actor_system_config {
 public:
  explicit admin_config(const actors::tls_files& tls) {
    actors::add_message_types(*this);
    load<caf::io::middleman>();
    // A client sends a few requests: one scheduler thread and no extra
    // middleman workers, instead of a thread per core in every trainer.
    set("scheduler.max-threads", size_t{1});
    set("middleman.workers", size_t{0});
    if (tls.enabled()) {
      actors::check_tls_files(tls);
      actors::enable_tls(*this, tls);
    }
  }
};

// Returns whether a TCP connection to host:port completes within
// `timeout`, or sets `reason`. CAF 0.17 connects with a blocking connect(),
// and an actor system that is shut down while one is pending waits for the
// kernel to give up (two minutes when the host drops packets). Probing
// first keeps a lookup to an unreachable planner within its timeout.
bool accepts_connection(const std::string& host, uint16_t port,
                        std::chrono::milliseconds timeout, std::string& reason) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int status = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints,
                           &found);
  if (status != 0) {
    reason = gai_strerror(status);
    return false;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool connected = false;
  for (auto* address = found; address != nullptr && !connected;
       address = address->ai_next) {
    int fd = socket(address->ai_family, address->ai_socktype | SOCK_NONBLOCK,
                    address->ai_protocol);
    if (fd < 0) {
      reason = std::strerror(errno);
      continue;
    }
    if (connect(fd, address->ai_addr, address->ai_addrlen) == 0) {
      connected = true;
    } else if (errno != EINPROGRESS) {
      reason = std::strerror(errno);
    } else {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd wanted{fd, POLLOUT, 0};
      int ready = poll(&wanted, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
      int error_code = 0;
      socklen_t length = sizeof error_code;
      if (ready == 1 &&
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &error_code, &length) == 0 &&
          error_code == 0)
        connected = true;
      else
        reason = ready == 0 ? "timed out after " + std::to_string(timeout.count()) + " ms"
                         : std::strerror(error_code != 0 ? error_code : errno);
    }
    close(fd);
  }
  freeaddrinfo(found);
  return connected;
}

}  // namespace

struct admin_client::system_holder {
  explicit system_holder(const actors::tls_files& tls) : config(tls) {}

  admin_config config;
  caf::actor_system system{config};
  caf::actor planner;
};

admin_client::admin_client(const std::string& planner_address,
                           std::chrono::milliseconds timeout,
                           const actors::tls_files& tls)
    : address_(planner_address), timeout_(timeout) {
  auto colon = planner_address.rfind(':');
  int port = 0;
  if (colon != std::string::npos && colon > 0) {
    try {
      port = std::stoi(planner_address.substr(colon + 1));
    } catch (const std::exception&) {
      port = 0;
    }
  }
  if (port <= 0 || port > 65535)
    throw error(errc::invalid_config, "--planner expects HOST:PORT, got '" +
                                          planner_address + "'");
  const std::string host = planner_address.substr(0, colon);
  std::string reason;
  if (!accepts_connection(host, static_cast<uint16_t>(port), timeout, reason))
    throw error(errc::unavailable,
                "cannot reach the planner at " + planner_address + ": " + reason +
                    "; check the address and that overlordd --role planner "
                    "(or all, with planner_port set) runs");
  holder_ = std::make_unique<system_holder>(tls);
  auto remote = actors::connect_actor(
      holder_->system, planner_address.substr(0, colon),
      static_cast<uint16_t>(port), timeout);
  if (!remote)
    throw error(errc::unavailable,
                "cannot reach the planner at " + planner_address + ": " +
                    holder_->system.render(remote.error()) +
                    "; check the address, that overlordd --role planner "
                    "(or all, with planner_port set) runs, and that both "
                    "sides use TLS certificates from the same CA (or both "
                    "none)");
  holder_->planner = *remote;
}

admin_client::~admin_client() = default;

namespace {

[[noreturn]] void fail(caf::actor_system& system, const std::string& address,
                       const caf::error& err) {
  // The planner puts its explanation in the error's context as one string.
  std::string text = system.render(err);
  const auto& context = err.context();
  if (context.size() == 1 && context.match_element<std::string>(0))
    text = context.get_as<std::string>(0);
  if (err == caf::sec::request_timeout)
    throw error(errc::timeout, "the planner at " + address +
                                   " did not answer in time");
  if (err == caf::sec::runtime_error)
    throw error(errc::unavailable, "the planner at " + address + ": " + text);
  throw error(errc::invalid_input, "the planner at " + address +
                                       " refused the request: " + text);
}

}  // namespace

std::string admin_client::status_json() {
  caf::scoped_actor self{holder_->system};
  std::string out;
  self->request(holder_->planner, timeout_, actors::status_atom::value)
      .receive([&](std::string& json) { out = std::move(json); },
               [&](caf::error& err) { fail(holder_->system, address_, err); });
  return out;
}

std::pair<std::string, std::string> admin_client::lookup(uint32_t rank) {
  caf::scoped_actor self{holder_->system};
  std::pair<std::string, std::string> out;
  self->request(holder_->planner, timeout_, actors::lookup_atom::value, rank)
      .receive(
          [&](std::string& endpoint, std::string& node) {
            out = {std::move(endpoint), std::move(node)};
          },
          [&](caf::error& err) { fail(holder_->system, address_, err); });
  return out;
}

std::vector<std::pair<std::string, std::string>> admin_client::endpoints(
    uint32_t rank) {
  caf::scoped_actor self{holder_->system};
  std::vector<std::pair<std::string, std::string>> out;
  self->request(holder_->planner, timeout_, actors::endpoints_atom::value,
                rank)
      .receive(
          [&](std::vector<std::string>& endpoints,
              std::vector<std::string>& nodes) {
            for (size_t i = 0; i < endpoints.size(); ++i)
              out.emplace_back(std::move(endpoints[i]),
                               i < nodes.size() ? std::move(nodes[i])
                                                : std::string());
          },
          [&](caf::error& err) { fail(holder_->system, address_, err); });
  return out;
}

uint64_t admin_client::set_weights(
    const std::vector<std::pair<std::string, double>>& weights) {
  // CAF 0.17 packs doubles for the network with a loop that never ends for
  // an infinite value, so such a weight would hang this process.
  for (const auto& [name, weight] : weights)
    if (!std::isfinite(weight))
      throw error(errc::invalid_config, "weight of '" + name +
                                            "' must be a finite number >= 0");
  caf::scoped_actor self{holder_->system};
  uint64_t step = 0;
  self->request(holder_->planner, timeout_, actors::set_weights_atom::value,
                weights)
      .receive([&](uint64_t from_step) { step = from_step; },
               [&](caf::error& err) { fail(holder_->system, address_, err); });
  return step;
}

std::string admin_client::drain(const std::string& node_id) {
  caf::scoped_actor self{holder_->system};
  std::string out;
  self->request(holder_->planner, timeout_, actors::drain_atom::value, node_id)
      .receive([&](std::string& reply) { out = std::move(reply); },
               [&](caf::error& err) { fail(holder_->system, address_, err); });
  return out;
}

std::string admin_client::set_log_level(const std::string& node_id,
                                        const std::string& logger,
                                        const std::string& level) {
  caf::scoped_actor self{holder_->system};
  std::string out;
  self->request(holder_->planner, timeout_, actors::log_level_atom::value,
                node_id, logger, level)
      .receive([&](std::string& reply) { out = std::move(reply); },
               [&](caf::error& err) { fail(holder_->system, address_, err); });
  return out;
}

rank_route find_rank(const std::string& planner_address, uint32_t rank,
                     std::chrono::milliseconds timeout,
                     const actors::tls_files& tls,
                     const std::function<void()>& between_attempts) {
  using std::chrono::milliseconds;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_ptr<admin_client> admin;
  for (;;) {
    try {
      if (!admin) {
        // Requests on this connection wait at most 5 s or the time left.
        const auto left = std::chrono::duration_cast<milliseconds>(
            deadline - std::chrono::steady_clock::now());
        const auto attempt_timeout = std::clamp<milliseconds>(
            left, milliseconds(100), std::chrono::seconds(5));
        admin = std::make_unique<admin_client>(planner_address, attempt_timeout,
                                               tls);
      }
      rank_route route;
      std::tie(route.endpoint, route.node) = admin->lookup(rank);
      for (auto& [endpoint, node] : admin->endpoints(rank))
        route.endpoints.push_back(std::move(endpoint));
      return route;
    } catch (const error& e) {
      bool retry = e.code() == errc::unavailable || e.code() == errc::timeout;
      if (!retry || std::chrono::steady_clock::now() > deadline)
        throw;
      if (e.code() == errc::timeout)
        admin.reset();
    }
    std::this_thread::sleep_for(milliseconds(200));
    if (between_attempts)
      between_attempts();
  }
}

}  // namespace overlord::tools
