#include "planner/step_planner.hpp"

#include <algorithm>
#include <string>

#include "common/error.hpp"
#include "planner/packer.hpp"

namespace overlord::planner {

namespace {

std::vector<double> scheduled_weights(const job_config& config,
                                      uint64_t step) {
  std::vector<double> weights;
  for (const auto& source : config.sources)
    weights.push_back(source.weight_at(step));
  return weights;
}

// Cuts carried pieces longer than `capacity` (left by a step with longer
// rows) into pieces that fit.
std::vector<piece> fit_pieces(const std::vector<piece>& pieces,
                              uint32_t capacity) {
  std::vector<piece> out;
  for (const auto& p : pieces) {
    if (p.length <= capacity) {
      out.push_back(p);
      continue;
    }
    for (uint32_t done = 0; done < p.length; done += capacity) {
      piece part = p;
      part.offset = p.offset + done;
      part.length = std::min(capacity, p.length - done);
      part.patches = done >= p.patches ? 0 : std::min(p.patches - done, part.length);
      out.push_back(std::move(part));
    }
  }
  return out;
}

}  // namespace

step_planner::step_planner(const job_config& config)
    : config_(config),
      mixture_weights_(scheduled_weights(config, 0)),
      mixture_(mixture_weights_, config.seed),
      queues_(config.sources.size()),
      next_sequence_(config.sources.size(), 0) {}

void step_planner::add_documents(uint32_t source,
                                 const std::vector<document_meta>& docs) {
  auto& queue = queues_.at(source);
  for (const auto& doc : docs) {
    if (doc.sequence != next_sequence_[source])
      throw error(errc::internal,
                  "source=" + config_.sources[source].name +
                      " announced sequence " + std::to_string(doc.sequence) +
                      " where " + std::to_string(next_sequence_[source]) +
                      " was expected");
    if (doc.tokens == 0)
      throw error(errc::internal, "source=" + config_.sources[source].name +
                                      " announced an empty document " +
                                      doc.key);
    queue.push_back(doc);
    ++next_sequence_[source];
  }
}

uint64_t step_planner::queued_tokens(uint32_t source) const {
  uint64_t total = 0;
  for (const auto& doc : queues_.at(source))
    total += doc.tokens;
  return total;
}

std::vector<double> step_planner::compose(const job_config& config,
                                          const operator_weights& set,
                                          uint64_t step) {
  auto weights = scheduled_weights(config, step);
  for (size_t s = 0; s < set.from_step.size() && s < weights.size(); ++s) {
    const uint64_t from = set.from_step[s];
    if (from == never_set || step < from)
      continue;
    const double at_set = config.sources[s].weight_at(from);
    weights[s] = at_set > 0 ? set.value[s] * weights[s] / at_set
                            : set.value[s];
  }
  return weights;
}

std::vector<double> step_planner::weights_at(uint64_t step) const {
  return compose(config_, set_, step);
}

step_planner::operator_weights step_planner::with_change(
    const std::vector<double>& weights, const std::vector<bool>& named) const {
  const size_t sources = config_.sources.size();
  if (weights.size() != sources || (!named.empty() && named.size() != sources))
    throw error(errc::invalid_input,
                "set_weights: " + std::to_string(weights.size()) +
                    " weights and " + std::to_string(named.size()) +
                    " source marks for " + std::to_string(sources) +
                    " sources");
  operator_weights changed = set_;
  changed.value.resize(sources, 0.0);
  changed.from_step.resize(sources, never_set);
  for (size_t s = 0; s < sources; ++s) {
    if (!named.empty() && !named[s])
      continue;
    changed.value[s] = weights[s];
    changed.from_step[s] = next_step_;
  }
  return changed;
}

std::optional<uint64_t> step_planner::first_step_without_weight(
    const std::vector<double>& weights, const std::vector<bool>& named) const {
  const auto changed = with_change(weights, named);
  for (uint64_t step : weight_points_from(config_, next_step_)) {
    double total = 0;
    for (double w : compose(config_, changed, step))
      total += w;
    if (!(total > 0))
      return step;
  }
  return std::nullopt;
}

step_planner::outcome step_planner::plan_next() {
  const uint32_t capacity = config_.length_at(next_step_);
  const uint32_t rows = config_.rows_per_rank_at(capacity) *
                        static_cast<uint32_t>(config_.ranks);
  const uint64_t budget = static_cast<uint64_t>(rows) * capacity;

  // Draw on copies so that a starved source leaves the planner untouched.
  mixture trial = mixture_;
  auto weights = weights_at(next_step_);
  double total_weight = 0;
  for (double w : weights)
    total_weight += w;
  if (!(total_weight > 0))
    throw error(errc::invalid_config,
                "step " + std::to_string(next_step_) +
                    ": every source weight is zero; fix the weight schedules");
  if (weights != mixture_weights_)
    trial.rebase(weights);
  std::vector<size_t> taken(queues_.size(), 0);
  std::vector<piece> fresh;
  auto carried = fit_pieces(carried_, capacity);
  uint64_t filled = 0;
  for (const auto& p : carried)
    filled += p.length;

  for (uint64_t pick = 0; filled < budget; ++pick) {
    uint32_t source = trial.pick(next_step_, pick);
    if (taken[source] == queues_[source].size()) {
      outcome starved;
      starved.starved_source = source;
      return starved;
    }
    const auto& meta = queues_[source][taken[source]++];
    trial.record(source, config_.mix_by == mix_unit::tokens ? meta.tokens : 1);
    auto pieces = split_document(meta, capacity);
    fresh.insert(fresh.end(), pieces.begin(), pieces.end());
    filled += meta.tokens;
  }

  auto packed = pack_rows(carried, fresh, rows, capacity);

  step_plan plan;
  plan.step = next_step_;
  plan.sequence_length = capacity;
  plan.rows = std::move(packed.rows);
  plan.carried_pieces = packed.leftover.size();
  for (const auto& row : plan.rows) {
    uint64_t used = 0;
    for (const auto& p : row)
      used += p.length;
    plan.padding_tokens += capacity - used;
  }
  split_across_ranks(config_, plan);

  for (size_t source = 0; source < queues_.size(); ++source)
    queues_[source].erase(queues_[source].begin(),
                          queues_[source].begin() + taken[source]);
  mixture_ = trial;
  mixture_weights_ = std::move(weights);
  carried_ = std::move(packed.leftover);
  ++next_step_;

  outcome done;
  done.plan = std::move(plan);
  return done;
}

uint64_t step_planner::oldest_held_sequence(uint32_t source) const {
  uint64_t oldest = next_sequence_.at(source);
  if (!queues_.at(source).empty())
    oldest = std::min(oldest, queues_[source].front().sequence);
  for (const auto& p : carried_)
    if (p.source == source)
      oldest = std::min(oldest, p.sequence);
  return oldest;
}

void step_planner::set_weights(const std::vector<double>& weights,
                               const std::vector<bool>& named) {
  set_ = with_change(weights, named);
}

planner_state step_planner::save() const {
  planner_state state;
  state.next_step = next_step_;
  state.weights = set_.value;
  state.weights_from_steps = set_.from_step;
  state.mixture_weights = mixture_weights_;
  state.drawn = mixture_.drawn();
  state.total_drawn = mixture_.total();
  state.carried = carried_;
  for (size_t source = 0; source < queues_.size(); ++source)
    state.next_unplanned.push_back(queues_[source].empty()
                                       ? next_sequence_[source]
                                       : queues_[source].front().sequence);
  return state;
}

void step_planner::restore(const planner_state& state) {
  if (state.next_unplanned.size() != queues_.size())
    throw error(errc::invalid_input,
                "saved planner state has " +
                    std::to_string(state.next_unplanned.size()) +
                    " sources, the job has " + std::to_string(queues_.size()));
  if ((!state.weights.empty() && state.weights.size() != queues_.size()) ||
      (!state.weights_from_steps.empty() &&
       state.weights_from_steps.size() != state.weights.size()))
    throw error(errc::invalid_input,
                "saved planner state has weights for " +
                    std::to_string(state.weights.size()) + " sources and " +
                    std::to_string(state.weights_from_steps.size()) +
                    " steps they took effect at; the job has " +
                    std::to_string(queues_.size()) + " sources");
  set_.value = state.weights;
  set_.from_step = state.weights_from_steps;
  // Older snapshots have one step for all the weights.
  if (set_.from_step.empty())
    set_.from_step.assign(set_.value.size(), state.weights_from_step);
  // The mixture continues with the weights of the step before, so that
  // the next step rebases exactly as it did in the first run.
  mixture_weights_ = state.mixture_weights.size() == queues_.size()
                         ? state.mixture_weights
                         : weights_at(state.next_step == 0 ? 0
                                                           : state.next_step - 1);
  mixture_.set_weights(mixture_weights_);
  mixture_.restore(state.drawn, state.total_drawn);
  carried_ = state.carried;
  next_step_ = state.next_step;
  next_sequence_ = state.next_unplanned;
  for (auto& queue : queues_)
    queue.clear();
}

void split_across_ranks(const job_config& config, step_plan& plan) {
  std::vector<double> costs;
  std::vector<uint64_t> tokens;
  for (const auto& row : plan.rows) {
    costs.push_back(config.cost.row_cost(row));
    uint64_t used = 0;
    for (const auto& p : row)
      used += p.length;
    tokens.push_back(used);
  }

  const auto ranks = static_cast<uint32_t>(config.ranks);
  if (plan.sequence_length == 0)
    plan.sequence_length = static_cast<uint32_t>(config.sequence_length);
  auto assignment = assign_rows(costs, tokens, ranks, config.balancer);
  plan.rank_costs = assignment.rank_costs;
  plan.imbalance = assignment.imbalance();
  plan.ranks.assign(ranks, rank_plan{});
  for (uint32_t rank = 0; rank < ranks; ++rank) {
    auto& out = plan.ranks[rank];
    out.step = plan.step;
    out.rank = rank;
    out.sequence_length = plan.sequence_length;
    out.cost = assignment.rank_costs[rank];
    out.imbalance = plan.imbalance;
    out.carried_pieces = plan.carried_pieces;
    for (uint32_t row : assignment.rows_of_rank[rank])
      out.rows.push_back(plan.rows[row]);
  }
}

}  // namespace overlord::planner
