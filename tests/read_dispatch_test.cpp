// The choice of the worker that takes a source pool's next read.

#include <catch2/catch.hpp>

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
  auto first = least_busy_worker({0, 0, 0}, 1, 1);
  REQUIRE(first);
  CHECK(*first == 1);
  // The start wraps around the list.
  auto wrapped = least_busy_worker({0, 1, 1}, 2, 2);
  REQUIRE(wrapped);
  CHECK(*wrapped == 0);
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
