// The node agent: one per overlordd process that does work (loader,
// constructor or all). It joins the planner, receives the job's plane,
// sends heartbeats, and spawns the source pools and constructors the
// planner assigns to this node. It owns what it spawns: when it stops,
// they stop.
#pragma once

#include <caf/all.hpp>
#include <zmq.hpp>

#include <memory>
#include <string>

#include "actors/messages.hpp"
#include "sources/tokenizer.hpp"
#include "transport/curve.hpp"

namespace overlord::actors {

struct agent_setup {
  node_info info;
  // "host:port" of a remote planner, to reach it again after it restarts;
  // empty when the planner runs in this process.
  std::string planner_address;
  // Serve payloads to remote constructors over ZeroMQ at this endpoint
  // (port 0: any free port); empty in a one-process job, where
  // constructors fetch through CAF messages in memory.
  std::string payload_endpoint;
  caf::actor planner;
  // Receives (fatal_atom, message) on errors and (leave_atom) when the
  // planner drains this node.
  caf::actor supervisor;
  std::shared_ptr<zmq::context_t> zmq_context;
  // CURVE keys of this node's ZeroMQ servers and payload clients; null
  // when the ZeroMQ links run without CURVE.
  std::shared_ptr<const transport::curve_keys> curve;
  // Tokenizer that this process loaded from `tokenizer_directory` (with
  // `--role all`). The agent uses it when the job's config names that
  // directory, and loads its own on first use otherwise.
  std::shared_ptr<const sources::gpt2_tokenizer> tokenizer;
  std::string tokenizer_directory;
};

caf::actor spawn_node_agent(caf::actor_system& system, agent_setup setup);

}  // namespace overlord::actors
