// Chooses the source of each next document so that the drawn amounts
// (tokens or documents) track the configured weights as closely as one
// document allows. Owned by the step planner; not thread-safe.
#pragma once

#include <cstdint>
#include <vector>

namespace overlord::planner {

class mixture {
 public:
  // `weights` are relative and need not sum to 1; at least one must be
  // positive. `seed` keys the tie-breaking draws.
  mixture(const std::vector<double>& weights, uint64_t seed);

  // Returns the source with the largest deficit (weight share of the total
  // drawn so far, minus what it got), as in Megatron-LM's blended datasets.
  // Exact ties are broken by a draw keyed by (seed, step, pick), so the
  // choice is a pure function of the state and those counters. Sources with
  // weight zero are never picked.
  uint32_t pick(uint64_t step, uint64_t pick_index) const;

  // Adds `amount` units (tokens or 1 document) drawn from `source`.
  void record(uint32_t source, double amount);

  // Replaces the weights from now on; what was drawn so far is kept, so the
  // mixture converges to the new shares.
  void set_weights(const std::vector<double>& weights);

  // Replaces the weights and drops the history behind the old ones: the
  // next draws follow the new shares at once, and only what each source
  // was owed (less than a document) carries over. Schedules and weight
  // changes use this; set_weights alone would make a source that was off
  // for a long time catch up on everything it missed.
  void rebase(const std::vector<double>& weights);

  // Sets the drawn amounts, as saved by drawn() and total().
  void restore(const std::vector<double>& drawn, double total);

  const std::vector<double>& shares() const { return shares_; }
  const std::vector<double>& drawn() const { return drawn_; }
  double total() const { return total_; }

 private:
  uint64_t seed_;
  std::vector<double> shares_;  // weights normalised to sum 1
  std::vector<double> drawn_;
  double total_ = 0;
};

}  // namespace overlord::planner
