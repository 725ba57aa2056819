// DataConstructor: one per data-parallel replica. It fetches the tokens
// its step plans name straight from the source pools and lays each step
// out as FlatBuffers batches, one per context-parallel rank. The batches
// go to the replica's trainer ranks over a ZeroMQ ROUTER socket, a
// transport::router_server owned by the actor's state.
#pragma once

#include <caf/all.hpp>
#include <zmq.hpp>

#include <memory>
#include <string>
#include <vector>

#include "planner/config.hpp"
#include "transport/curve.hpp"

namespace overlord::actors {

struct constructor_setup {
  planner::job_config config;
  uint32_t rank = 0;
  std::vector<caf::actor> pools;  // indexed like config.sources
  // Payload server of each source's loader node; empty for a pool in this
  // process, which is asked through CAF instead.
  std::vector<std::string> payload_endpoints;
  caf::actor planner;
  caf::actor supervisor;
  int32_t pad_id = 0;
  std::string node_id;
  std::string bind;  // address to bind; config.bind when empty
  // A shadow keeps the plans of its rank without building them, and
  // starts building when promoted or when a trainer fails over to it. It
  // listens on any free port; trainers learn it from the planner.
  bool shadow = false;
  // Serve the first batch only once startup_prefetch_steps steps are
  // built. The planner sets it for a rank's first primary of a job, not
  // for a replacement whose trainers are mid-run.
  bool hold_first_batch = false;
  std::shared_ptr<zmq::context_t> zmq_context;
  // CURVE keys for the trainer socket and payload fetches; null: none.
  std::shared_ptr<const transport::curve_keys> curve;
};

// Spawns the constructor and binds its endpoint, tcp://bind:base_port+rank
// (any free port for a shadow), and stores the bound endpoint in
// `endpoint` when given. Throws overlord::error(io_error) when the port
// cannot be bound.
caf::actor spawn_constructor(caf::actor_system& system,
                             constructor_setup setup,
                             std::string* endpoint = nullptr);

}  // namespace overlord::actors
