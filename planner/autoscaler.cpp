#include "planner/autoscaler.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>

namespace overlord::planner {

namespace {

// A pool shrinks only after its lower target held this long (and for at
// least three decisions): supply comes in bursts of whole shards, and a
// short lull in consumption must not cost a refill.
constexpr int shrink_after_ms = 10000;
constexpr int shrink_after_decisions = 3;
// Planning that waits this share of the time or more is taken as waiting
// this much, so one bad interval cannot ask for unbounded workers.
constexpr double max_blocked_fraction = 0.9;

std::string format(const char* pattern, double a, double b, double c,
                   double d, double e) {
  char text[200];
  std::snprintf(text, sizeof text, pattern, a, b, c, d, e);
  return text;
}

}  // namespace

autoscaler::autoscaler(const job_config& config)
    : config_(config), shrink_votes_(config.sources.size(), 0) {}

std::vector<double> autoscaler::documents_per_step(
    const job_config& config, const std::vector<double>& weights,
    const std::vector<pool_observation>& pools) {
  const size_t n = config.sources.size();
  std::vector<double> out(n, 0);
  double total_weight = 0;
  for (double w : weights)
    total_weight += w;
  if (!(total_weight > 0))
    return out;
  const double tokens = static_cast<double>(config.tokens_per_step());
  if (config.mix_by == mix_unit::tokens) {
    for (size_t s = 0; s < n; ++s)
      if (pools[s].mean_tokens > 0)
        out[s] = weights[s] / total_weight * tokens / pools[s].mean_tokens;
    return out;
  }
  // By documents: N documents per step with shares w make
  // N * sum(w * mean tokens) tokens.
  double tokens_per_document = 0;
  for (size_t s = 0; s < n; ++s) {
    if (weights[s] > 0 && pools[s].mean_tokens <= 0)
      return out;  // a length is unknown yet
    tokens_per_document += weights[s] / total_weight * pools[s].mean_tokens;
  }
  if (!(tokens_per_document > 0))
    return out;
  const double documents = tokens / tokens_per_document;
  for (size_t s = 0; s < n; ++s)
    out[s] = weights[s] / total_weight * documents;
  return out;
}

double autoscaler::supply_steps_per_s(
    const job_config& config, const std::vector<double>& weights,
    const std::vector<pool_observation>& pools) {
  const auto needed = documents_per_step(config, weights, pools);
  double supply = std::numeric_limits<double>::infinity();
  for (size_t s = 0; s < needed.size(); ++s) {
    if (!(needed[s] > 0))
      continue;
    if (pools[s].latency_us <= 0 || pools[s].workers <= 0)
      return 0;
    const double documents_per_s = pools[s].workers * 1e6 / pools[s].latency_us;
    supply = std::min(supply, documents_per_s / needed[s]);
  }
  return std::isfinite(supply) ? supply : 0;
}

std::vector<scaling_decision> autoscaler::decide(
    const std::vector<pool_observation>& pools,
    const demand_observation& demand,
    const std::function<std::vector<double>(uint64_t)>& weights_at,
    const std::map<std::string, int>& node_budget) {
  const size_t n = config_.sources.size();
  std::vector<scaling_decision> decisions;
  if (pools.size() != n || !(demand.steps_per_s > 0))
    return decisions;

  const double blocked =
      std::clamp(demand.blocked_fraction, 0.0, max_blocked_fraction);
  const double rate = demand.steps_per_s / (1 - blocked);

  // Weights now, at the end of the look-ahead, and at every scheduled
  // change in between; each pool is sized for its busiest of them.
  const uint64_t horizon =
      demand.next_step + static_cast<uint64_t>(config_.autoscale.lookahead_steps);
  std::set<uint64_t> steps = {demand.next_step, horizon};
  for (const auto& source : config_.sources) {
    uint64_t step = demand.next_step;
    for (int guard = 0; guard < 64; ++guard) {
      step = source.weight_schedule.kind == step_schedule::shape::constant
                 ? std::numeric_limits<uint64_t>::max()
                 : source.weight_schedule.next_change_after(step);
      if (step > horizon)
        break;
      steps.insert(step);
    }
  }
  std::vector<double> per_step(n, 0);
  std::vector<uint64_t> busiest_step(n, demand.next_step);
  for (uint64_t step : steps) {
    auto needed = documents_per_step(config_, weights_at(step), pools);
    for (size_t s = 0; s < n; ++s)
      if (needed[s] > per_step[s]) {
        per_step[s] = needed[s];
        busiest_step[s] = step;
      }
  }

  std::vector<int> target(n);
  std::vector<double> need(n, 0);
  std::vector<std::string> reason(n);
  for (size_t s = 0; s < n; ++s) {
    const auto& source = config_.sources[s];
    const auto& pool = pools[s];
    target[s] = pool.workers;
    if (pool.latency_us <= 0 || pool.mean_tokens <= 0)
      continue;  // nothing measured yet: keep the size
    need[s] = rate * per_step[s] * pool.latency_us / 1e6 *
              config_.autoscale.headroom;
    target[s] = std::clamp(static_cast<int>(std::ceil(need[s] - 1e-9)),
                           source.min_workers, source.max_workers);
    reason[s] = format(
        "need %.2f workers: %.2f steps/s x %.1f documents/step x %.3f "
        "ms/document x headroom %.2f",
        need[s], rate, per_step[s], pool.latency_us / 1000,
        config_.autoscale.headroom);
    if (blocked > 0)
      reason[s] += " (planning waited " +
                   std::to_string(static_cast<int>(std::lround(100 * blocked))) +
                   "% of the time)";
    if (demand.before_first_rate)
      reason[s] += " (no consumption rate yet: the rate is what the pools "
                   "supply now)";
    if (busiest_step[s] != demand.next_step)
      reason[s] += " for the weights of step " +
                   std::to_string(busiest_step[s]);
  }

  // Each loader node's CPU budget caps the cores its pools are expected to
  // keep busy (the need before headroom): a worker that mostly waits for
  // work costs little, so worker counts may add up to more. Over budget,
  // every pool's need shrinks by the same factor.
  std::map<std::string, std::vector<size_t>> by_node;
  for (size_t s = 0; s < n; ++s)
    if (!reason[s].empty())
      by_node[pools[s].node].push_back(s);
  for (const auto& [node, members] : by_node) {
    auto budget = node_budget.find(node);
    if (budget == node_budget.end())
      continue;
    double busy = 0;
    for (size_t s : members)
      busy += need[s] / config_.autoscale.headroom;
    if (busy <= budget->second)
      continue;
    const double factor = budget->second / busy;
    for (size_t s : members) {
      const auto& source = config_.sources[s];
      target[s] = std::clamp(static_cast<int>(std::ceil(need[s] * factor - 1e-9)),
                             source.min_workers, source.max_workers);
      reason[s] += format(", scaled by %.2f to fit the budget of %.0f cores",
                          factor, budget->second, 0, 0, 0) +
                   " on node " + node;
    }
  }

  for (size_t s = 0; s < n; ++s) {
    const int current = pools[s].workers;
    if (target[s] > current) {
      shrink_votes_[s] = 0;
      decisions.push_back({static_cast<uint32_t>(s), current, target[s],
                           reason[s]});
    } else if (target[s] < current) {
      const int needed = std::max(
          shrink_after_decisions,
          (shrink_after_ms + config_.autoscale.interval_ms - 1) /
              config_.autoscale.interval_ms);
      if (++shrink_votes_[s] >= needed) {
        shrink_votes_[s] = 0;
        decisions.push_back({static_cast<uint32_t>(s), current, target[s],
                             reason[s]});
      }
    } else {
      shrink_votes_[s] = 0;
    }
  }
  return decisions;
}

}  // namespace overlord::planner
