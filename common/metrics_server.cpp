#include "common/metrics_server.hpp"

#include <httplib.h>

#include <mutex>

#include "common/error.hpp"
#include "common/job_metrics.hpp"
#include "common/metrics.hpp"

namespace overlord::metrics {

namespace {

std::mutex health_mutex;
bool healthy_now = false;
std::string health_reason = "starting";

// The content type Prometheus expects for the text exposition format.
constexpr const char* exposition_type =
    "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

void set_health(bool healthy, const std::string& reason) {
  {
    std::lock_guard<std::mutex> guard(health_mutex);
    healthy_now = healthy;
    health_reason = reason;
  }
  record_health(healthy);
}

std::pair<bool, std::string> health() {
  std::lock_guard<std::mutex> guard(health_mutex);
  return {healthy_now, health_reason};
}

metrics_server::metrics_server()
    : server_(std::make_unique<httplib::Server>()) {
  // cpp-httplib sets SO_REUSEPORT by default on Linux, which lets a second
  // process bind the same port and take half of the scrapes. SO_REUSEADDR
  // alone still allows a restart while old connections are in TIME_WAIT.
  server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
}

metrics_server::~metrics_server() { stop(); }

int metrics_server::start(const std::string& address, int port) {
  server_->Get("/metrics", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(process_registry().render(), exposition_type);
  });
  server_->Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    auto [healthy, reason] = health();
    res.status = healthy ? 200 : 503;
    res.set_content((healthy ? "ok: " : "unhealthy: ") + reason + "\n",
                    "text/plain; charset=utf-8");
  });

  int bound = port == 0 ? server_->bind_to_any_port(address)
                        : (server_->bind_to_port(address, port) ? port : -1);
  if (bound < 0)
    throw error(errc::unavailable,
                "cannot serve metrics on " + address + ":" +
                    std::to_string(port) +
                    ": the address is not local or the port is taken; choose "
                    "another --metrics-port");
  thread_ = std::thread(
      [server = server_.get()] { server->listen_after_bind(); });
  return bound;
}

void metrics_server::stop() {
  if (thread_.joinable()) {
    server_->stop();
    thread_.join();
  }
}

}  // namespace overlord::metrics
