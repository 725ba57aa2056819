#include "planner/balancer.hpp"

#include <algorithm>
#include <numeric>
#include <queue>

#include "common/error.hpp"

namespace overlord::planner {

double cost_model::row_cost(const row_plan& row) const {
  double vision = 0;
  for (const auto& p : row) {
    double patches = p.patches;
    vision += vision_linear * patches + vision_quadratic * patches * patches;
  }
  if (masking == attention::row) {
    double used = 0;
    for (const auto& p : row)
      used += p.length;
    return vision + linear * used + quadratic * used * used;
  }
  double total = vision;
  for (const auto& p : row) {
    double l = p.length;
    total += linear * l + quadratic * l * l;
  }
  return total;
}

const char* to_string(balance_method method) {
  switch (method) {
    case balance_method::consecutive:
      return "consecutive";
    case balance_method::tokens:
      return "tokens";
    case balance_method::lpt:
      return "lpt";
    case balance_method::kk:
      return "kk";
    case balance_method::best:
      return "best";
  }
  return "unknown";
}

balance_method parse_balance_method(const std::string& name) {
  for (auto method : {balance_method::consecutive, balance_method::tokens,
                      balance_method::lpt, balance_method::kk,
                      balance_method::best})
    if (name == to_string(method))
      return method;
  throw error(errc::invalid_config,
              "unknown balancer '" + name +
                  "'; use best, lpt, kk, tokens or consecutive");
}

namespace {

// Row indices sorted by decreasing weight; ties keep index order.
std::vector<uint32_t> by_decreasing(const std::vector<double>& weights) {
  std::vector<uint32_t> order(weights.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return weights[a] > weights[b];
  });
  return order;
}

// Longest processing time first, with a cardinality limit: each row, in
// decreasing weight, goes to the lightest rank that still has room.
std::vector<std::vector<uint32_t>> lpt(const std::vector<double>& weights,
                                       uint32_t ranks) {
  const size_t per_rank = weights.size() / ranks;
  std::vector<std::vector<uint32_t>> out(ranks);
  std::vector<double> load(ranks, 0);
  for (uint32_t row : by_decreasing(weights)) {
    uint32_t best = ranks;
    for (uint32_t r = 0; r < ranks; ++r)
      if (out[r].size() < per_rank && (best == ranks || load[r] < load[best]))
        best = r;
    out[best].push_back(row);
    load[best] += weights[row];
  }
  return out;
}

// Balanced largest differencing (Karmarkar-Karp for k equal-size subsets):
// sorted rows are cut into layers of `ranks` rows, each a partial solution
// of one row per subset. The two partial solutions with the largest spread
// are merged repeatedly, pairing the heaviest subset of one with the
// lightest of the other, so every subset keeps the same row count.
std::vector<std::vector<uint32_t>> karmarkar_karp(
    const std::vector<double>& weights, uint32_t ranks) {
  struct partial {
    std::vector<double> sums;                 // sorted decreasing
    std::vector<std::vector<uint32_t>> rows;  // parallel to sums
    uint64_t order = 0;                       // tie-break: creation order

    double spread() const { return sums.front() - sums.back(); }
  };
  auto less_spread = [](const partial& a, const partial& b) {
    if (a.spread() != b.spread())
      return a.spread() < b.spread();
    return a.order > b.order;
  };
  std::priority_queue<partial, std::vector<partial>, decltype(less_spread)>
      heap(less_spread);

  auto sorted = by_decreasing(weights);
  uint64_t created = 0;
  for (size_t start = 0; start < sorted.size(); start += ranks) {
    partial layer;
    layer.order = created++;
    for (uint32_t i = 0; i < ranks; ++i) {
      uint32_t row = sorted[start + i];
      layer.sums.push_back(weights[row]);
      layer.rows.push_back({row});
    }
    heap.push(std::move(layer));
  }

  while (heap.size() > 1) {
    partial a = heap.top();
    heap.pop();
    partial b = heap.top();
    heap.pop();
    partial merged;
    merged.order = created++;
    std::vector<std::pair<double, std::vector<uint32_t>>> subsets;
    for (uint32_t i = 0; i < ranks; ++i) {
      auto rows = a.rows[i];
      const auto& other = b.rows[ranks - 1 - i];
      rows.insert(rows.end(), other.begin(), other.end());
      subsets.emplace_back(a.sums[i] + b.sums[ranks - 1 - i], std::move(rows));
    }
    std::stable_sort(subsets.begin(), subsets.end(),
                     [](const auto& x, const auto& y) { return x.first > y.first; });
    for (auto& [sum, rows] : subsets) {
      merged.sums.push_back(sum);
      merged.rows.push_back(std::move(rows));
    }
    heap.push(std::move(merged));
  }
  return heap.top().rows;
}

std::vector<std::vector<uint32_t>> consecutive(size_t rows, uint32_t ranks) {
  const size_t per_rank = rows / ranks;
  std::vector<std::vector<uint32_t>> out(ranks);
  for (uint32_t r = 0; r < ranks; ++r)
    for (size_t i = 0; i < per_rank; ++i)
      out[r].push_back(static_cast<uint32_t>(r * per_rank + i));
  return out;
}

rank_assignment evaluate(std::vector<std::vector<uint32_t>> rows_of_rank,
                         const std::vector<double>& row_costs) {
  rank_assignment result;
  double total = 0;
  for (auto& rows : rows_of_rank) {
    std::sort(rows.begin(), rows.end());
    double cost = 0;
    for (uint32_t row : rows)
      cost += row_costs[row];
    result.rank_costs.push_back(cost);
    result.max_cost = std::max(result.max_cost, cost);
    total += cost;
  }
  result.mean_cost = rows_of_rank.empty() ? 0 : total / rows_of_rank.size();
  result.rows_of_rank = std::move(rows_of_rank);
  return result;
}

}  // namespace

rank_assignment assign_rows(const std::vector<double>& row_costs,
                            const std::vector<uint64_t>& row_tokens,
                            uint32_t ranks, balance_method method) {
  if (ranks == 0 || row_costs.size() % ranks != 0 ||
      row_tokens.size() != row_costs.size())
    throw error(errc::internal, "assign_rows: " +
                                    std::to_string(row_costs.size()) +
                                    " rows do not split over " +
                                    std::to_string(ranks) + " ranks");
  switch (method) {
    case balance_method::consecutive:
      return evaluate(consecutive(row_costs.size(), ranks), row_costs);
    case balance_method::tokens: {
      std::vector<double> tokens(row_tokens.begin(), row_tokens.end());
      return evaluate(lpt(tokens, ranks), row_costs);
    }
    case balance_method::lpt:
      return evaluate(lpt(row_costs, ranks), row_costs);
    case balance_method::kk:
      return evaluate(karmarkar_karp(row_costs, ranks), row_costs);
    case balance_method::best: {
      rank_assignment best;
      bool have = false;
      for (auto candidate : {balance_method::lpt, balance_method::kk,
                             balance_method::tokens}) {
        auto result = assign_rows(row_costs, row_tokens, ranks, candidate);
        if (!have || result.max_cost < best.max_cost) {
          best = std::move(result);
          have = true;
        }
      }
      return best;
    }
  }
  throw error(errc::internal, "assign_rows: unknown method");
}

}  // namespace overlord::planner
