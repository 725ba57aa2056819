// The HTTP endpoint of an overlordd process, served with cpp-httplib on a
// thread of its own.
//   GET /metrics  the process registry in the Prometheus text format
//   GET /healthz  200 "ok" while the node is healthy, else 503 and why
// main() owns the server, and stop() or the destructor joins the thread.
#pragma once

#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace overlord::metrics {

// Sets what /healthz returns. `reason` explains an unhealthy state (for
// example "lost the planner") or describes a healthy one. Thread-safe.
// The process starts unhealthy, with the reason "starting".
void set_health(bool healthy, const std::string& reason);

// Returns whether the process is healthy, and the reason last set.
std::pair<bool, std::string> health();

class metrics_server {
 public:
  metrics_server();
  ~metrics_server();

  // Binds `address:port` (port 0 picks any free port) and starts serving.
  // Returns the bound port. Throws overlord::error(unavailable) naming the
  // address when it cannot bind.
  int start(const std::string& address, int port);

  void stop();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace overlord::metrics
