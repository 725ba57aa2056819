#include "planner/topology.hpp"

#include <string>

#include "common/error.hpp"

namespace overlord::planner {

rank_coordinates coordinates_of(const topology_config& topology,
                                uint32_t global_rank) {
  const uint64_t world = static_cast<uint64_t>(topology.dp) * topology.tp *
                         topology.pp * topology.cp;
  if (global_rank >= world)
    throw error(errc::invalid_config,
                "rank " + std::to_string(global_rank) +
                    " is outside the topology of " + std::to_string(world) +
                    " ranks (dp*tp*pp*cp)");
  rank_coordinates c;
  uint32_t rest = global_rank;
  c.tp = rest % topology.tp;
  rest /= topology.tp;
  c.cp = rest % topology.cp;
  rest /= topology.cp;
  c.dp = rest % topology.dp;
  rest /= topology.dp;
  c.pp = rest;
  return c;
}

std::optional<consumer> consumer_of(const topology_config& topology,
                                    uint32_t global_rank) {
  auto c = coordinates_of(topology, global_rank);
  if (c.tp != 0)
    return std::nullopt;
  const bool first = c.pp == 0;
  const bool last = c.pp + 1 == static_cast<uint32_t>(topology.pp);
  if (!first && !(last && topology.last_stage_consumes))
    return std::nullopt;
  return consumer{global_rank, c.dp, c.cp, c.pp};
}

std::vector<consumer> consumers(const topology_config& topology) {
  std::vector<consumer> out;
  const uint32_t world = static_cast<uint32_t>(topology.dp * topology.tp *
                                               topology.pp * topology.cp);
  for (uint32_t rank = 0; rank < world; ++rank)
    if (auto found = consumer_of(topology, rank))
      out.push_back(*found);
  return out;
}

std::pair<uint32_t, uint32_t> cp_chunks(uint32_t cp_size, uint32_t cp_rank) {
  if (cp_rank >= cp_size)
    throw error(errc::invalid_config,
                "cp rank " + std::to_string(cp_rank) + " is not below cp " +
                    std::to_string(cp_size));
  return {cp_rank, 2 * cp_size - 1 - cp_rank};
}

}  // namespace overlord::planner
