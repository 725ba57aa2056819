// Autoscaler decisions from made-up observations: pool sizes follow
// demand and latency, respect the bounds and node budgets, grow ahead of
// a scheduled weight change and shrink only after a sustained lull.

#include <catch2/catch.hpp>

#include "planner/autoscaler.hpp"

using namespace overlord::planner;

namespace {

job_config scaling_config() {
  job_config config;
  config.sequence_length = 1000;
  config.rows_per_rank = 4;
  config.ranks = 2;  // 8000 tokens per step
  config.mix_by = mix_unit::tokens;
  config.autoscale.enabled = true;
  config.autoscale.headroom = 1.5;
  config.autoscale.lookahead_steps = 50;
  for (const char* name : {"text", "images"}) {
    source_config source;
    source.name = name;
    source.weight = 1;
    source.workers = 2;
    source.min_workers = 1;
    source.max_workers = 16;
    config.sources.push_back(source);
  }
  return config;
}

std::vector<pool_observation> observed(double text_ms, double image_ms) {
  // 100 tokens per document: 40 documents per step from each source.
  return {{"node-a", 2, text_ms * 1000, 100}, {"node-a", 2, image_ms * 1000, 100}};
}

std::function<std::vector<double>(uint64_t)> constant_weights(
    const job_config& config) {
  return [&config](uint64_t step) {
    std::vector<double> weights;
    for (const auto& source : config.sources)
      weights.push_back(source.weight_at(step));
    return weights;
  };
}

}  // namespace

TEST_CASE("documents per step follow weights and lengths", "[autoscaler]") {
  auto config = scaling_config();
  auto pools = observed(1, 1);
  pools[1].mean_tokens = 400;
  auto per_step = autoscaler::documents_per_step(config, {3, 1}, pools);
  CHECK(per_step[0] == Approx(60));  // 6000 tokens of 100
  CHECK(per_step[1] == Approx(5));   // 2000 tokens of 400
  config.mix_by = mix_unit::documents;
  per_step = autoscaler::documents_per_step(config, {3, 1}, pools);
  // N * (0.75 * 100 + 0.25 * 400) = 8000
  CHECK(per_step[0] == Approx(0.75 * 8000 / 175));
  CHECK(per_step[1] == Approx(0.25 * 8000 / 175));
}

TEST_CASE("autoscaler grows the slow pool to meet demand", "[autoscaler]") {
  auto config = scaling_config();
  autoscaler scaler(config);
  demand_observation demand;
  demand.steps_per_s = 2;
  // Images: 2 steps/s x 40 docs x 50 ms x 1.5 = 6 workers; text: 0.24.
  auto decisions =
      scaler.decide(observed(1, 50), demand, constant_weights(config), {});
  REQUIRE(decisions.size() == 1);
  CHECK(decisions[0].source == 1);
  CHECK(decisions[0].from == 2);
  CHECK(decisions[0].to == 6);
  CHECK_THAT(decisions[0].reason, Catch::Contains("need 6.00 workers"));

  // Trainers waited half the time: they could go twice as fast.
  demand.blocked_fraction = 0.5;
  decisions = scaler.decide(observed(1, 50), demand, constant_weights(config), {});
  REQUIRE(decisions.size() == 1);
  CHECK(decisions[0].to == 12);
  CHECK_THAT(decisions[0].reason, Catch::Contains("waited 50%"));
}

TEST_CASE("autoscaler keeps pools in bounds and budgets", "[autoscaler]") {
  auto config = scaling_config();
  config.sources[1].max_workers = 5;
  autoscaler scaler(config);
  demand_observation demand;
  demand.steps_per_s = 2;
  auto decisions =
      scaler.decide(observed(1, 50), demand, constant_weights(config), {});
  REQUIRE(decisions.size() == 1);
  CHECK(decisions[0].to == 5);

  // The pools would keep 4.16 cores busy; a budget of 2 scales every
  // need by 2 / 4.16: images 6 * 0.48 = 2.88 -> 3 workers, text 1.
  config.sources[1].max_workers = 16;
  autoscaler budgeted(config);
  decisions = budgeted.decide(observed(1, 50), demand, constant_weights(config),
                              {{"node-a", 2}});
  REQUIRE(decisions.size() == 1);
  CHECK(decisions[0].source == 1);
  CHECK(decisions[0].to == 3);
  CHECK_THAT(decisions[0].reason, Catch::Contains("budget of 2 cores"));
  // A budget the pools fit in changes nothing.
  autoscaler roomy(config);
  decisions = roomy.decide(observed(1, 50), demand, constant_weights(config),
                           {{"node-a", 8}});
  REQUIRE(decisions.size() == 1);
  CHECK(decisions[0].to == 6);
}

TEST_CASE("autoscaler waits for measurements", "[autoscaler]") {
  auto config = scaling_config();
  autoscaler scaler(config);
  demand_observation demand;
  CHECK(scaler.decide(observed(1, 50), demand, constant_weights(config), {})
            .empty());
  demand.steps_per_s = 2;
  auto pools = observed(1, 50);
  pools[1].latency_us = 0;
  CHECK(scaler.decide(pools, demand, constant_weights(config), {}).empty());
}

TEST_CASE("supply rate follows the slowest pool", "[autoscaler]") {
  auto config = scaling_config();
  // 40 documents per step from each source. Text: 2 workers at 1 ms make
  // 2000 documents/s (50 steps/s); images: 2 workers at 50 ms make 40
  // documents/s (1 step/s).
  CHECK(autoscaler::supply_steps_per_s(config, {1, 1}, observed(1, 50)) ==
        Approx(1));
  // A source with weight 0 does not limit the supply.
  CHECK(autoscaler::supply_steps_per_s(config, {1, 0}, observed(1, 50)) ==
        Approx(25));
  auto unmeasured = observed(1, 50);
  unmeasured[1].latency_us = 0;
  CHECK(autoscaler::supply_steps_per_s(config, {1, 1}, unmeasured) == 0);
}

TEST_CASE("autoscaler grows before a consumption rate is measured",
          "[autoscaler]") {
  auto config = scaling_config();
  autoscaler scaler(config);
  // Planning waited for images the whole time and no rate is measured:
  // the demand is taken as 10x what the pools supply (1 step/s).
  demand_observation demand;
  demand.steps_per_s = autoscaler::supply_steps_per_s(
      config, {1, 1}, observed(1, 50));
  demand.blocked_fraction = 1;
  demand.before_first_rate = true;
  auto decisions =
      scaler.decide(observed(1, 50), demand, constant_weights(config), {});
  REQUIRE(decisions.size() == 1);
  CHECK(decisions[0].source == 1);
  // 10 steps/s x 40 documents x 50 ms x 1.5 = 30, capped at 16.
  CHECK(decisions[0].to == 16);
  CHECK_THAT(decisions[0].reason, Catch::Contains("no consumption rate yet"));
}

TEST_CASE("autoscaler grows ahead of a scheduled weight change",
          "[autoscaler]") {
  auto config = scaling_config();
  config.autoscale.interval_ms = 5000;
  config.sources[1].weight_schedule.kind = step_schedule::shape::stepwise;
  config.sources[1].weight_schedule.points = {{0, 0}, {1040, 1}};
  config.sources[1].weight = 0;
  autoscaler scaler(config);
  demand_observation demand;
  demand.steps_per_s = 2;
  demand.next_step = 900;  // the change is beyond the look-ahead
  auto decisions =
      scaler.decide(observed(1, 50), demand, constant_weights(config), {});
  // Images are off: the pool shrinks, but only after three decisions.
  CHECK(decisions.empty());
  demand.next_step = 1000;  // now 40 steps ahead
  decisions = scaler.decide(observed(1, 50), demand, constant_weights(config), {});
  REQUIRE(decisions.size() == 1);
  CHECK(decisions[0].source == 1);
  CHECK(decisions[0].to == 6);
  CHECK_THAT(decisions[0].reason, Catch::Contains("weights of step 1040"));
}

TEST_CASE("autoscaler shrinks only after a sustained lull", "[autoscaler]") {
  auto config = scaling_config();
  // Decisions every 5 s: ten seconds' worth is fewer than the minimum of
  // three decisions.
  config.autoscale.interval_ms = 5000;
  autoscaler scaler(config);
  demand_observation demand;
  demand.steps_per_s = 2;
  auto pools = observed(1, 1);
  pools[0].workers = 8;
  // Text needs 1 worker; two decisions keep 8, the third shrinks.
  CHECK(scaler.decide(pools, demand, constant_weights(config), {}).empty());
  CHECK(scaler.decide(pools, demand, constant_weights(config), {}).empty());
  auto decisions = scaler.decide(pools, demand, constant_weights(config), {});
  REQUIRE(decisions.size() == 2);
  CHECK(decisions[0].source == 0);
  CHECK(decisions[0].to == 1);

  // Every 500 ms it takes twenty decisions, ten seconds.
  config.autoscale.interval_ms = 500;
  autoscaler frequent(config);
  for (int i = 0; i < 19; ++i)
    CHECK(frequent.decide(pools, demand, constant_weights(config), {}).empty());
  CHECK(frequent.decide(pools, demand, constant_weights(config), {}).size() == 2);
}
