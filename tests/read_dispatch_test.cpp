// The choice of the worker that takes a source pool's next read.

#include <catch2/catch.hpp>

#include <vector>

#include "actors/read_dispatch.hpp"

using overlord::actors::least_busy_worker;
using overlord::actors::reads_per_worker;

TEST_CASE("idle worker takes the read", "[read_dispatch]") {
  // Round robin would pick worker 0 next and queue the read behind its
  // current one while worker 2 idles.
  auto picked = least_busy_worker({1, 1, 0}, 0, 2);
  REQUIRE(picked);
  CHECK(*picked == 2);
}

TEST_CASE("equal workers take reads in turn", "[read_dispatch]") {
  // Six reads with two allowed per worker, the start moving past each
  // pick as the pool moves it: every worker takes one before any takes a
  // second.
  std::vector<size_t> loads(3, 0);
  std::vector<size_t> picks;
  size_t start = 1;
  for (int read = 0; read < 6; ++read) {
    auto picked = least_busy_worker(loads, start, 2);
    REQUIRE(picked);
    picks.push_back(*picked);
    loads[*picked]++;
    start = *picked + 1;
  }
  CHECK(picks == std::vector<size_t>{1, 2, 0, 1, 2, 0});
  CHECK_FALSE(least_busy_worker(loads, start, 2));
}

TEST_CASE("full workers take no read", "[read_dispatch]") {
  CHECK_FALSE(least_busy_worker({1, 1}, 0, 1));
  CHECK_FALSE(least_busy_worker({2, 2}, 0, 2));
  CHECK_FALSE(least_busy_worker({}, 0, 1));
}

TEST_CASE("only short reads queue a second one", "[read_dispatch]") {
  CHECK(reads_per_worker(0) == 1);  // nothing measured yet
  CHECK(reads_per_worker(3) == 2);
  CHECK(reads_per_worker(40) == 1);
}
