// The planner actor: drives the step planner from the document metadata
// the source pools announce, and sends each constructor its rank's rows,
// staying at most `plan_ahead` steps ahead of the slowest rank.
#pragma once

#include <caf/all.hpp>

#include <vector>

#include "planner/config.hpp"

namespace overlord::actors {

struct planner_setup {
  planner::job_config config;
  std::vector<caf::actor> pools;  // indexed like config.sources
  caf::actor supervisor;
};

// Spawns the planner. It starts planning once every rank's constructor has
// registered with (register_atom, rank, constructor).
caf::actor spawn_planner(caf::actor_system& system, planner_setup setup);

}  // namespace overlord::actors
