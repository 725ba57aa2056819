// Splits a step's packed rows across data-parallel ranks so that the
// slowest rank, by modelled compute cost, is as fast as possible, with the
// same number of rows on every rank (synchronous training needs that).
// Plain functions of their inputs: deterministic, no state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/plan.hpp"

namespace overlord::planner {

// Compute cost of a packed row, in arbitrary units, as the sum of its
// modules. The language model: a*l + b*l^2 per document when attention is
// masked per document, or a*L + b*L^2 for the L used tokens of the row
// when every token attends to the whole row; l and L count image patches
// too (the fused sequence). The vision encoder: c*p + d*p^2 per image of
// p patches.
struct cost_model {
  enum class attention { document, row };
  attention masking = attention::document;
  double linear = 1.0;     // a
  double quadratic = 0.0;  // b
  double vision_linear = 0.0;     // c
  double vision_quadratic = 0.0;  // d

  double row_cost(const row_plan& row) const;
};

enum class balance_method {
  consecutive,  // rows in order, equal blocks: no balancing
  tokens,       // LPT on token counts only
  lpt,          // LPT on modelled cost
  kk,           // balanced largest differencing (Karmarkar-Karp) on cost
  best,         // the lowest maximum of lpt, kk and tokens
};

const char* to_string(balance_method method);
balance_method parse_balance_method(const std::string& name);

struct rank_assignment {
  // rows_of_rank[r] lists global row indices, in increasing order.
  std::vector<std::vector<uint32_t>> rows_of_rank;
  std::vector<double> rank_costs;
  double max_cost = 0;
  double mean_cost = 0;

  // Max over mean rank cost; 1 is perfect balance.
  double imbalance() const { return mean_cost > 0 ? max_cost / mean_cost : 1.0; }
};

// Assigns `row_costs.size()` rows to `ranks` ranks, the same number each.
// `row_tokens` is used by the `tokens` method. The row count must divide
// by `ranks`.
rank_assignment assign_rows(const std::vector<double>& row_costs,
                            const std::vector<uint64_t>& row_tokens,
                            uint32_t ranks, balance_method method);

}  // namespace overlord::planner
