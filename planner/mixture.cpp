#include "planner/mixture.hpp"

#include <string>

#include "common/error.hpp"
#include "planner/rng.hpp"

namespace overlord::planner {

mixture::mixture(const std::vector<double>& weights, uint64_t seed)
    : seed_(seed), drawn_(weights.size(), 0.0) {
  set_weights(weights);
}

void mixture::set_weights(const std::vector<double>& weights) {
  if (weights.size() != drawn_.size())
    throw error(errc::internal, "mixture: weight count changed");
  double sum = 0;
  for (double w : weights) {
    if (!(w >= 0))
      throw error(errc::invalid_config, "mixture: weights must be >= 0");
    sum += w;
  }
  if (!(sum > 0))
    throw error(errc::invalid_config,
                "mixture: at least one weight must be positive");
  shares_.clear();
  for (double w : weights)
    shares_.push_back(w / sum);
}

void mixture::rebase(const std::vector<double>& weights) {
  // Current deficits, kept for sources that stay in the mix so that the
  // fraction of a document each is owed carries over.
  std::vector<double> deficit(shares_.size());
  for (size_t i = 0; i < shares_.size(); ++i)
    deficit[i] = shares_[i] * total_ - drawn_[i];
  set_weights(weights);
  double kept = 0;
  for (size_t i = 0; i < shares_.size(); ++i) {
    if (shares_[i] <= 0)
      deficit[i] = 0;
    kept += deficit[i];
  }
  // Deficits sum to zero; spread what dropped-out sources held over the
  // others by share.
  for (size_t i = 0; i < shares_.size(); ++i) {
    deficit[i] -= kept * shares_[i];
    drawn_[i] = shares_[i] * total_ - deficit[i];
  }
}

uint32_t mixture::pick(uint64_t step, uint64_t pick_index) const {
  const auto key = derive_key(derive_key(seed_, step), pick_index);
  uint32_t best = 0;
  double best_deficit = 0;
  uint64_t best_tiebreak = 0;
  bool found = false;
  for (uint32_t i = 0; i < shares_.size(); ++i) {
    if (shares_[i] <= 0)
      continue;
    double deficit = shares_[i] * total_ - drawn_[i];
    uint64_t tiebreak = draw(key, i);
    if (!found || deficit > best_deficit ||
        (deficit == best_deficit && tiebreak < best_tiebreak)) {
      best = i;
      best_deficit = deficit;
      best_tiebreak = tiebreak;
      found = true;
    }
  }
  return best;
}

void mixture::restore(const std::vector<double>& drawn, double total) {
  if (drawn.size() != drawn_.size())
    throw error(errc::invalid_input, "mixture: saved state has " +
                                         std::to_string(drawn.size()) +
                                         " sources, the job has " +
                                         std::to_string(drawn_.size()));
  drawn_ = drawn;
  total_ = total;
}

void mixture::record(uint32_t source, double amount) {
  drawn_.at(source) += amount;
  total_ += amount;
}

}  // namespace overlord::planner
