#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "planner/balancer.hpp"
#include "planner/rng.hpp"

using namespace overlord::planner;

namespace {

row_plan row_of(std::vector<uint32_t> lengths) {
  row_plan row;
  for (auto length : lengths) {
    piece p;
    p.length = length;
    p.document_tokens = length;
    row.push_back(p);
  }
  return row;
}

void check_partition(const rank_assignment& result, size_t rows,
                     uint32_t ranks) {
  REQUIRE(result.rows_of_rank.size() == ranks);
  std::set<uint32_t> seen;
  for (const auto& list : result.rows_of_rank) {
    CHECK(list.size() == rows / ranks);
    CHECK(std::is_sorted(list.begin(), list.end()));
    for (auto row : list)
      CHECK(seen.insert(row).second);
  }
  CHECK(seen.size() == rows);
}

}  // namespace

TEST_CASE("cost model per document", "[balancer]") {
  cost_model model;
  model.linear = 2;
  model.quadratic = 0.5;
  auto row = row_of({10, 4});
  // 2*10 + 0.5*100 + 2*4 + 0.5*16
  CHECK(model.row_cost(row) == Approx(86.0));
}

TEST_CASE("cost model whole row", "[balancer]") {
  cost_model model;
  model.masking = cost_model::attention::row;
  model.linear = 2;
  model.quadratic = 0.5;
  auto row = row_of({10, 4});
  // 2*14 + 0.5*196
  CHECK(model.row_cost(row) == Approx(126.0));
}

TEST_CASE("balancer exact small cases", "[balancer]") {
  // Costs 8 7 6 5 4 3 2 1 over 2 ranks of 4 rows: 18 each is optimal.
  std::vector<double> costs = {8, 7, 6, 5, 4, 3, 2, 1};
  std::vector<uint64_t> tokens(8, 100);
  for (auto method : {balance_method::lpt, balance_method::kk,
                      balance_method::best}) {
    auto result = assign_rows(costs, tokens, 2, method);
    check_partition(result, 8, 2);
    CHECK(result.max_cost == Approx(18));
    CHECK(result.imbalance() == Approx(1.0));
  }

  // Consecutive blocks: 8+7+6+5 = 26 against 10.
  auto blocks = assign_rows(costs, tokens, 2, balance_method::consecutive);
  CHECK(blocks.rows_of_rank[0] == std::vector<uint32_t>{0, 1, 2, 3});
  CHECK(blocks.max_cost == Approx(26));
  CHECK(blocks.imbalance() == Approx(26.0 / 18.0));
}

TEST_CASE("balancer three ranks two rows", "[balancer]") {
  // The optimum pairs 5+3, 5+3 and 4+4; both methods find it.
  std::vector<double> costs = {5, 5, 4, 4, 3, 3};
  std::vector<uint64_t> tokens(6, 1);
  auto lpt = assign_rows(costs, tokens, 3, balance_method::lpt);
  auto kk = assign_rows(costs, tokens, 3, balance_method::kk);
  check_partition(lpt, 6, 3);
  check_partition(kk, 6, 3);
  CHECK(lpt.max_cost == Approx(8));
  CHECK(kk.max_cost == Approx(8));
}

TEST_CASE("balancer keeps equal row counts", "[balancer]") {
  // One huge row and many small ones: a rank must still take its share
  // of rows even if that makes it heavier.
  std::vector<double> costs = {100, 1, 1, 1, 1, 1, 1, 1};
  std::vector<uint64_t> tokens(8, 1);
  for (auto method : {balance_method::lpt, balance_method::kk,
                      balance_method::tokens, balance_method::best}) {
    auto result = assign_rows(costs, tokens, 4, method);
    check_partition(result, 8, 4);
    CHECK(result.max_cost == Approx(101));
  }
}

TEST_CASE("balancer never worse than token split", "[balancer]") {
  // Property over random instances: rows with a realistic spread of
  // costs (quadratic in length) for several rank counts.
  for (uint64_t instance = 0; instance < 300; ++instance) {
    uint32_t ranks = 1u << (1 + instance % 3);
    size_t rows = ranks * (1 + draw(instance, 0) % 8);
    std::vector<double> costs;
    std::vector<uint64_t> tokens;
    for (size_t r = 0; r < rows; ++r) {
      uint64_t length = 1 + bounded(draw(instance, r + 1), 8192);
      tokens.push_back(length);
      double l = static_cast<double>(length);
      costs.push_back(l + 0.01 * l * l);
    }
    auto best = assign_rows(costs, tokens, ranks, balance_method::best);
    auto by_tokens = assign_rows(costs, tokens, ranks, balance_method::tokens);
    check_partition(best, rows, ranks);
    CHECK(best.max_cost <= by_tokens.max_cost);
  }
}

TEST_CASE("balancer is deterministic", "[balancer]") {
  std::vector<double> costs;
  std::vector<uint64_t> tokens;
  for (uint64_t r = 0; r < 64; ++r) {
    costs.push_back(static_cast<double>(bounded(draw(9, r), 1000)));
    tokens.push_back(1);
  }
  auto first = assign_rows(costs, tokens, 8, balance_method::best);
  auto second = assign_rows(costs, tokens, 8, balance_method::best);
  CHECK(first.rows_of_rank == second.rows_of_rank);
}

TEST_CASE("balancer rejects uneven row count", "[balancer]") {
  std::vector<double> costs(7, 1);
  std::vector<uint64_t> tokens(7, 1);
  CHECK_THROWS(assign_rows(costs, tokens, 2, balance_method::lpt));
}

TEST_CASE("balance method names round trip", "[balancer]") {
  for (auto method : {balance_method::consecutive, balance_method::tokens,
                      balance_method::lpt, balance_method::kk,
                      balance_method::best})
    CHECK(parse_balance_method(to_string(method)) == method);
  CHECK_THROWS_WITH(parse_balance_method("greedy"),
                    Catch::Contains("unknown balancer 'greedy'"));
}
