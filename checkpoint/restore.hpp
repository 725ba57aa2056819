// Loading a checkpoint for a resume: the newest snapshot at or before the
// requested step, the logged weight changes and step deltas after it, and
// the check that the config still describes the same stream.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/records.hpp"
#include "checkpoint/store.hpp"
#include "planner/config.hpp"

namespace overlord::checkpoint {

// The config values the batch stream depends on, as (key, value) text.
// Ranks, rows per rank, workers, ports and buffers are not among them:
// a job may resume with other values for those.
std::vector<std::pair<std::string, std::string>> stream_settings(
    const planner::job_config& config);

struct restore_plan {
  snapshot_record snapshot;
  std::string snapshot_path;
  uint64_t resume_step = 0;
  // Weight changes that apply from a step at or after the snapshot.
  std::map<uint64_t, weight_change> weight_changes;
  // What each logged step drew, to check the replay against.
  std::map<uint64_t, step_delta> step_deltas;
  bool torn_tail = false;
  // The delta log as it must read after the resume: the records for steps
  // before the resume step, the last one per step, in step order. What the
  // abandoned run logged for later steps, weight changes included, is
  // dropped with it.
  std::vector<std::string> kept_records;
  size_t dropped_weight_changes = 0;
};

// Loads what resuming at `resume_step` needs from `store`. Throws
// overlord::error: invalid_config when no snapshot is old enough or the
// config changed a stream setting (the message names the setting, both
// values and the fix), invalid_input when a record is damaged.
restore_plan prepare_restore(const checkpoint_store& store,
                             const planner::job_config& config,
                             uint64_t resume_step);

}  // namespace overlord::checkpoint
