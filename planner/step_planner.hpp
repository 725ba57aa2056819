// Decides, step by step, which documents form the global batch and how
// they are packed into rows and split across ranks. It works on metadata
// only and is driven by the planner actor, which feeds it the documents
// each source pool has announced. Not thread-safe; one owner.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "planner/config.hpp"
#include "planner/mixture.hpp"
#include "planner/plan.hpp"

namespace overlord::planner {

// The step planner's state between two steps, for checkpoints. Queued
// documents are not part of it: their pools announce them again, from
// `next_unplanned`.
struct planner_state {
  uint64_t next_step = 0;
  // Weights last set by an operator and the step they took effect at;
  // empty when the schedule alone decides.
  std::vector<double> weights;
  uint64_t weights_from_step = 0;
  // Per source, the step its entry of `weights` took effect at, or
  // never_set when the operator never set it. Empty: every entry took
  // effect at weights_from_step.
  std::vector<uint64_t> weights_from_steps;
  // Weights the mixture used for the last planned step.
  std::vector<double> mixture_weights;
  std::vector<double> drawn;
  double total_drawn = 0;
  std::vector<piece> carried;
  // Per source, the first document not drawn yet.
  std::vector<uint64_t> next_unplanned;
};

class step_planner {
 public:
  explicit step_planner(const job_config& config);

  // Appends announced documents of `source`; they must continue its
  // sequence without gaps.
  void add_documents(uint32_t source, const std::vector<document_meta>& docs);

  // Documents of `source` announced but not yet drawn.
  size_t queued(uint32_t source) const { return queues_.at(source).size(); }

  // Tokens of the documents of `source` announced but not yet drawn.
  uint64_t queued_tokens(uint32_t source) const;

  struct outcome {
    std::optional<step_plan> plan;
    // When no plan could be made: the source whose queue ran dry. Nothing
    // in the planner changed, so the same call succeeds once that source
    // has announced more documents.
    std::optional<uint32_t> starved_source;
  };

  // Plans step `next_step()` and advances to the next one.
  outcome plan_next();

  uint64_t next_step() const { return next_step_; }
  const mixture& current_mixture() const { return mixture_; }

  // Sequence number the next announced document of `source` must have.
  uint64_t next_sequence(uint32_t source) const {
    return next_sequence_.at(source);
  }

  // Oldest sequence of `source` the planner still holds (queued or
  // carried), or next_sequence(source) when it holds none.
  uint64_t oldest_held_sequence(uint32_t source) const;

  // The step of a source whose weight an operator never set.
  static constexpr uint64_t never_set = UINT64_MAX;

  // Sets the weights of the sources marked in `named` (all of them when
  // `named` is empty) from the next step on. With a weight schedule the
  // set value scales it: a source set to w at step S has weight
  // w * schedule(t) / schedule(S) at t >= S (w itself where schedule(S) is
  // zero), so the schedule's shape goes on from the operator's value.
  // The other sources keep their weights, set or scheduled.
  void set_weights(const std::vector<double>& weights,
                   const std::vector<bool>& named = {});

  // Returns the first step from the next one on at which every weight
  // would be zero after set_weights(weights, named), or nullopt.
  std::optional<uint64_t> first_step_without_weight(
      const std::vector<double>& weights, const std::vector<bool>& named) const;

  // Mixture weights of `step`: the schedules, composed with the last
  // operator change.
  std::vector<double> weights_at(uint64_t step) const;

  // Row length of `step` and the global rows at that length.
  uint32_t length_at(uint64_t step) const { return config_.length_at(step); }

  // Returns the state between the last planned step and the next.
  planner_state save() const;

  // Replaces the state with `state`; queues are emptied and expect the
  // pools to announce again from state.next_unplanned.
  void restore(const planner_state& state);

 private:
  job_config config_;
  // Weights set by an operator, per source: the value and the step it took
  // effect at (never_set: the schedule alone decides).
  struct operator_weights {
    std::vector<double> value;
    std::vector<uint64_t> from_step;
  };
  static std::vector<double> compose(const job_config& config,
                                     const operator_weights& set,
                                     uint64_t step);
  operator_weights with_change(const std::vector<double>& weights,
                               const std::vector<bool>& named) const;
  operator_weights set_;
  std::vector<double> mixture_weights_;
  mixture mixture_;
  std::vector<std::deque<document_meta>> queues_;
  std::vector<uint64_t> next_sequence_;
  std::vector<piece> carried_;
  uint64_t next_step_ = 0;
};

// Splits a step's global rows across `config.ranks` ranks with the
// configured balancer and cost model, filling `plan.ranks`,
// `plan.rank_costs` and `plan.imbalance`.
void split_across_ranks(const job_config& config, step_plan& plan);

}  // namespace overlord::planner
