// SourceLoader pool: one per data source. The pool actor hands shards to
// its worker actors, puts their output back into the source's
// deterministic order (seeded shard shuffle per epoch, records in file
// order) whatever the worker count, announces document metadata to the
// planner and serves token payloads to constructors. A document's tokens
// are kept until every piece of it was fetched and the planner releases
// the last step that used it, so a replacement constructor can fetch them
// again.
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <memory>

#include "actors/messages.hpp"
#include "planner/config.hpp"
#include "sources/tokenizer.hpp"
#include "transport/router_server.hpp"

namespace overlord::actors {

struct pool_setup {
  planner::job_config config;
  uint32_t source = 0;
  std::shared_ptr<const sources::gpt2_tokenizer> tokenizer;
  // Receives (fatal_atom, message) when the source cannot go on.
  caf::actor supervisor;
  // Where the stream starts: the beginning for a new job, or the oldest
  // document still needed when this pool replaces a lost one.
  stream_position start;
  // The node's payload server, which sends replies to remote
  // constructors; null when every constructor is in this process.
  std::shared_ptr<transport::router_server> payload_server;
};

// Spawns the pool actor; it spawns and links its own workers.
caf::actor spawn_source_pool(caf::actor_system& system, pool_setup setup);

// Returns the shard names used in sample keys: each shard's path relative
// to the deepest folder that contains all of them.
std::vector<std::string> shard_display_names(
    const std::vector<std::string>& shards);

}  // namespace overlord::actors
