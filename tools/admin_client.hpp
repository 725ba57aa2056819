// Client of the planner's admin interface, for overlordctl, and the rank
// lookup (find_rank) of overlord_pull and the Python client. It speaks
// CAF to the planner actor published on planner_port. One instance per
// thread.
#pragma once

#include <caf/all.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "actors/tls.hpp"

namespace overlord::tools {

class admin_client {
 public:
  // Connects to the planner at "host:port", over mutual TLS when `tls`
  // names certificate files. Throws overlord::error (unavailable) when it
  // cannot be reached, naming the address.
  admin_client(const std::string& planner_address,
               std::chrono::milliseconds timeout,
               const actors::tls_files& tls = {});
  ~admin_client();

  // The job's state as one JSON object.
  std::string status_json();

  // The endpoint serving `rank` and the id of the node that runs it.
  // Throws overlord::error(unavailable) while the rank has no constructor.
  std::pair<std::string, std::string> lookup(uint32_t rank);

  // Every endpoint serving `rank`, primary first, then its shadow if any,
  // each with the id of the node that runs it. Throws
  // overlord::error(unavailable) while the rank has no constructor.
  std::vector<std::pair<std::string, std::string>> endpoints(uint32_t rank);

  // Changes mixture weights; returns the first step that uses them.
  uint64_t set_weights(const std::vector<std::pair<std::string, double>>& weights);

  // Moves a node's work elsewhere and stops it; returns the planner's reply.
  std::string drain(const std::string& node_id);

  // Sets `logger` ("sources", ..., or "all") to `level` on one node, or on
  // the planner and every node when `node_id` is empty. Returns the
  // planner's reply, which names the nodes reached.
  std::string set_log_level(const std::string& node_id,
                            const std::string& logger,
                            const std::string& level);

 private:
  struct system_holder;
  std::unique_ptr<system_holder> holder_;
  std::string address_;
  std::chrono::milliseconds timeout_;
};

// The endpoints and node that serve one rank, as the planner reports them.
struct rank_route {
  std::string endpoint;                // the primary's endpoint
  std::string node;                    // the node that runs the primary
  std::vector<std::string> endpoints;  // primary first, then its shadow
};

// Requests `rank`'s route from the planner at `planner_address`, retrying
// every 200 ms while the planner is unreachable or has not assigned the
// rank, until `timeout` has passed. A request without a reply within
// min(5 s, time left) is sent again over a new connection. An attempt
// under way at the deadline finishes first, so a call can take up to four
// such waits longer than `timeout`. `between_attempts` runs before each
// retry and may throw to stop.
rank_route find_rank(const std::string& planner_address, uint32_t rank,
                     std::chrono::milliseconds timeout,
                     const actors::tls_files& tls = {},
                     const std::function<void()>& between_attempts = {});

}  // namespace overlord::tools
