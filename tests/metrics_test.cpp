// The Prometheus registry: text exposition format, label escaping,
// histogram buckets, type checks and concurrent updates.
#include <catch2/catch.hpp>

#include <thread>
#include <vector>

#include "common/error.hpp"
#include "common/job_metrics.hpp"
#include "common/metrics.hpp"

using overlord::metrics::registry;

TEST_CASE("counter renders help, type and labels", "[metrics]") {
  registry r;
  r.get_counter("jobs_total", "Jobs done.", {{"source", "mail"}}).add(3);
  r.get_counter("jobs_total", "Jobs done.", {{"source", "moby"}}).add();
  CHECK(r.render() ==
        "# HELP jobs_total Jobs done.\n"
        "# TYPE jobs_total counter\n"
        "jobs_total{source=\"mail\"} 3\n"
        "jobs_total{source=\"moby\"} 1\n");
}

TEST_CASE("counter ignores negative amounts", "[metrics]") {
  registry r;
  auto& c = r.get_counter("c_total", "C.");
  c.add(2.5);
  c.add(-1);
  CHECK(c.value() == 2.5);
  CHECK(r.render() == "# HELP c_total C.\n# TYPE c_total counter\nc_total 2.5\n");
}

TEST_CASE("gauge without labels renders a bare name", "[metrics]") {
  registry r;
  auto& g = r.get_gauge("depth", "Queue depth.");
  g.set(7);
  g.add(-2);
  CHECK(r.render() == "# HELP depth Queue depth.\n# TYPE depth gauge\ndepth 5\n");
}

TEST_CASE("label values and help are escaped", "[metrics]") {
  registry r;
  r.get_gauge("g", "Line one\nback\\slash \"quoted\"",
              {{"path", "a\\b \"c\"\nd"}})
      .set(1);
  CHECK(r.render() ==
        "# HELP g Line one\\nback\\\\slash \"quoted\"\n"
        "# TYPE g gauge\n"
        "g{path=\"a\\\\b \\\"c\\\"\\nd\"} 1\n");
}

TEST_CASE("histogram renders cumulative buckets, sum and count",
          "[metrics]") {
  registry r;
  auto& h = r.get_histogram("wait_seconds", "Wait.", {0.1, 1, 2.5},
                            {{"rank", "0"}});
  h.observe(0.05);
  h.observe(0.1);  // on a bound: counts in that bucket (le is <=)
  h.observe(2);
  h.observe(7);
  CHECK(r.render() ==
        "# HELP wait_seconds Wait.\n"
        "# TYPE wait_seconds histogram\n"
        "wait_seconds_bucket{rank=\"0\",le=\"0.1\"} 2\n"
        "wait_seconds_bucket{rank=\"0\",le=\"1\"} 2\n"
        "wait_seconds_bucket{rank=\"0\",le=\"2.5\"} 3\n"
        "wait_seconds_bucket{rank=\"0\",le=\"+Inf\"} 4\n"
        "wait_seconds_sum{rank=\"0\"} 9.15\n"
        "wait_seconds_count{rank=\"0\"} 4\n");
}

TEST_CASE("histogram without labels has only le", "[metrics]") {
  registry r;
  r.get_histogram("imbalance", "I.", {1.5}).observe(1.2);
  CHECK(r.render() ==
        "# HELP imbalance I.\n"
        "# TYPE imbalance histogram\n"
        "imbalance_bucket{le=\"1.5\"} 1\n"
        "imbalance_bucket{le=\"+Inf\"} 1\n"
        "imbalance_sum 1.2\n"
        "imbalance_count 1\n");
}

TEST_CASE("families render sorted by name", "[metrics]") {
  registry r;
  r.get_gauge("b_gauge", "B.").set(1);
  r.get_gauge("a_gauge", "A.").set(2);
  auto text = r.render();
  CHECK(text.find("a_gauge 2") < text.find("b_gauge 1"));
}

TEST_CASE("special values are spelt as Prometheus reads them", "[metrics]") {
  using overlord::metrics::format_value;
  CHECK(format_value(1.0 / 0.0) == "+Inf");
  CHECK(format_value(-1.0 / 0.0) == "-Inf");
  CHECK(format_value(0.0 / 0.0) == "NaN");
  CHECK(format_value(1234567) == "1234567");
  CHECK(format_value(0.25) == "0.25");
}

TEST_CASE("registry rejects inconsistent registrations", "[metrics]") {
  registry r;
  r.get_counter("x_total", "X.", {{"source", "a"}});
  CHECK_THROWS_AS(r.get_gauge("x_total", "X."), overlord::error);
  CHECK_THROWS_AS(r.get_counter("x_total", "X.", {{"rank", "0"}}),
                  overlord::error);
  CHECK_THROWS_AS(r.get_counter("bad-name", "B."), overlord::error);
  CHECK_THROWS_AS(r.get_counter("y_total", "Y.", {{"__reserved", "1"}}),
                  overlord::error);
  CHECK_THROWS_AS(r.get_histogram("h", "H.", {1}, {{"le", "1"}}),
                  overlord::error);
  CHECK_THROWS_AS(r.get_histogram("h2", "H.", {2, 1}), overlord::error);
  r.get_histogram("h3", "H.", {1, 2});
  CHECK_THROWS_AS(r.get_histogram("h3", "H.", {1, 3}), overlord::error);
}

TEST_CASE("removed series disappear with an empty family", "[metrics]") {
  registry r;
  r.get_gauge("g", "G.", {{"source", "a"}}).set(1);
  r.get_gauge("g", "G.", {{"source", "b"}}).set(2);
  r.remove("g", {{"source", "a"}});
  CHECK(r.render() == "# HELP g G.\n# TYPE g gauge\ng{source=\"b\"} 2\n");
  r.remove("g", {{"source", "b"}});
  CHECK(r.render().empty());
}

TEST_CASE("concurrent updates are not lost", "[metrics]") {
  registry r;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&r] {
      for (int i = 0; i < 10000; ++i) {
        r.get_counter("n_total", "N.", {{"source", "s"}}).add();
        r.get_histogram("h", "H.", {0.5}).observe(1);
      }
    });
  for (auto& thread : threads)
    thread.join();
  CHECK(r.get_counter("n_total", "N.", {{"source", "s"}}).value() == 40000);
  CHECK(r.get_histogram("h", "H.", {0.5}).read().count == 40000);
}

TEST_CASE("autoscale hook counts changes by direction", "[metrics]") {
  using overlord::metrics::process_registry;
  overlord::metrics::record_autoscale("mail", 2, 4);
  overlord::metrics::record_autoscale("mail", 4, 4);
  overlord::metrics::record_autoscale("mail", 4, 1);
  auto text = process_registry().render();
  CHECK(text.find("overlord_autoscale_decisions_total{source=\"mail\","
                  "direction=\"up\"} 1\n") != std::string::npos);
  CHECK(text.find("overlord_autoscale_decisions_total{source=\"mail\","
                  "direction=\"down\"} 1\n") != std::string::npos);
  CHECK(text.find("overlord_autoscale_workers{source=\"mail\"} 1\n") !=
        std::string::npos);
}
