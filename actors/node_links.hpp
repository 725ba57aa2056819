// Direct connections between nodes. CAF routes messages to a node's
// actors over a direct connection when one exists, else through the node
// that introduced them, so a constructor node that connects to each loader
// node it fetches from keeps payloads off the planner.
#pragma once

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <memory>
#include <set>
#include <string>

namespace overlord::actors {

// Connects this process to the node agent published at `address`
// ("host:port") unless it is "local", empty or already in `connected`.
// Logs and returns false when the node cannot be reached; messages then
// still arrive, routed through the planner.
bool connect_directly(caf::actor_system& system, const std::string& address,
                      std::set<std::string>& connected,
                      const std::shared_ptr<spdlog::logger>& log,
                      const std::string& node_id);

}  // namespace overlord::actors
