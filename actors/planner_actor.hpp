// The planner actor: the job's single point of control. Nodes join it and
// receive the plane; it assigns source pools to loader nodes and ranks to
// constructor nodes, notices nodes that die or drain and moves their work,
// drives the step planner from the metadata the pools announce, sends each
// constructor its rank's rows at most `plan_ahead` steps ahead of the
// slowest rank, and answers the admin console. It never handles payloads.
#pragma once

#include <caf/all.hpp>

#include <memory>
#include <optional>

#include "checkpoint/restore.hpp"
#include "checkpoint/store.hpp"
#include "planner/config.hpp"

namespace overlord::actors {

struct planner_setup {
  planner::job_config config;
  int32_t pad_id = 0;  // the tokenizer's EOS id, used for padding
  caf::actor supervisor;
  // Where snapshots and deltas go; null when checkpoints are off.
  std::shared_ptr<checkpoint::checkpoint_store> store;
  // Set to resume a job: the planner restores the snapshot, replays to
  // the resume step without sending those plans, and goes on from there.
  std::optional<checkpoint::restore_plan> restore;
  // Set after a planner restart (--resume DIR --recover): wait for the
  // nodes to report what they still run and resume where the trainers are.
  bool recover = false;
};

caf::actor spawn_planner(caf::actor_system& system, planner_setup setup);

}  // namespace overlord::actors
