// Sizes each source pool so that its workers keep up with what the
// trainers consume. It uses two measurements: the documents per second
// the plan needs from the source (from the consumption rate and the
// mixture weights, now and at scheduled changes ahead), and the time a
// worker spends per document. A plain class fed by the planner actor, so its
// decisions can be tested with made-up observations.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "planner/config.hpp"

namespace overlord::planner {

// The planner's measurements of one pool at a decision.
struct pool_observation {
  std::string node;         // loader node running the pool
  int workers = 0;          // workers now
  double latency_us = 0;    // a worker's time per document; 0 = not measured
  double mean_tokens = 0;   // tokens per document so far; 0 = none seen
};

// The rate at which the job consumes steps.
struct demand_observation {
  uint64_t next_step = 0;
  // Steps per second the slowest rank received, averaged.
  double steps_per_s = 0;
  // Share of the time planning waited for a source that ran dry while
  // ranks had room for more steps: the trainers would go that much faster
  // with data ready.
  double blocked_fraction = 0;
  // No consumption rate is measured yet, so steps_per_s is what the pools
  // supply now (supply_steps_per_s).
  bool before_first_rate = false;
};

struct scaling_decision {
  uint32_t source = 0;
  int from = 0;
  int to = 0;
  std::string reason;
};

class autoscaler {
 public:
  explicit autoscaler(const job_config& config);

  // Returns the pools whose size should change. `weights_at` gives the
  // mixture weights of a step; `node_budget` the workers each loader node
  // may run in total.
  std::vector<scaling_decision> decide(
      const std::vector<pool_observation>& pools,
      const demand_observation& demand,
      const std::function<std::vector<double>(uint64_t)>& weights_at,
      const std::map<std::string, int>& node_budget);

  // Documents per step source `source` needs at `weights`, from the mean
  // document lengths observed; 0 while a length is unknown.
  static std::vector<double> documents_per_step(
      const job_config& config, const std::vector<double>& weights,
      const std::vector<pool_observation>& pools);

  // Returns the steps per second the pools supply with their current
  // workers at `weights`, limited by the slowest source; 0 while a
  // latency or a length is unknown.
  static double supply_steps_per_s(const job_config& config,
                                   const std::vector<double>& weights,
                                   const std::vector<pool_observation>& pools);

 private:
  job_config config_;
  // Consecutive decisions that found each pool too large. A pool shrinks
  // only after ten seconds' worth (at least three), so a short lull does
  // not cost a refill.
  std::vector<int> shrink_votes_;
};

}  // namespace overlord::planner
