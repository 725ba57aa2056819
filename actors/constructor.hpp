// DataConstructor: one per consuming rank. It fetches the tokens its step
// plans name straight from the source pools, lays each step out as a
// FlatBuffers batch, and serves the batches to its trainer over a ZeroMQ
// ROUTER socket (transport::batch_server, owned by the actor's state).
#pragma once

#include <caf/all.hpp>
#include <zmq.hpp>

#include <memory>
#include <vector>

#include "planner/config.hpp"

namespace overlord::actors {

struct constructor_setup {
  planner::job_config config;
  uint32_t rank = 0;
  std::vector<caf::actor> pools;  // indexed like config.sources
  caf::actor planner;
  caf::actor supervisor;
  int32_t pad_id = 0;
  std::shared_ptr<zmq::context_t> zmq_context;
};

// Spawns the constructor and binds its endpoint, tcp://bind:base_port+rank.
// Throws overlord::error(io_error) when the port cannot be bound.
caf::actor spawn_constructor(caf::actor_system& system,
                             constructor_setup setup);

}  // namespace overlord::actors
