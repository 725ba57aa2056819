#include "actors/node_links.hpp"

#include <caf/io/all.hpp>

#include "actors/tls.hpp"

namespace overlord::actors {

bool connect_directly(caf::actor_system& system, const std::string& address,
                      std::set<std::string>& connected,
                      const std::shared_ptr<spdlog::logger>& log,
                      const std::string& node_id) {
  if (address.empty() || address == "local" || connected.count(address))
    return true;
  auto colon = address.rfind(':');
  int port = 0;
  if (colon != std::string::npos) {
    try {
      port = std::stoi(address.substr(colon + 1));
    } catch (const std::exception&) {
      port = 0;
    }
  }
  if (port <= 0 || port > 65535) {
    log->warn("node={} ignores invalid node address '{}'", node_id, address);
    return false;
  }
  auto remote = connect_actor(system, address.substr(0, colon),
                              static_cast<uint16_t>(port));
  if (!remote) {
    log->warn("node={} cannot connect to node at {}: {}; its messages travel "
              "through the planner",
              node_id, address, system.render(remote.error()));
    return false;
  }
  connected.insert(address);
  log->info("node={} connected directly to node at {}", node_id, address);
  return true;
}

}  // namespace overlord::actors
