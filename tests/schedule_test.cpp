#include <catch2/catch.hpp>

#include <map>
#include <string>

#include "common/error.hpp"
#include "planner/config.hpp"
#include "planner/rng.hpp"
#include "planner/schedule.hpp"
#include "planner/step_planner.hpp"
#include "test_files.hpp"

using namespace overlord::planner;

namespace {

step_schedule make_schedule(step_schedule::shape kind,
                            std::vector<step_schedule::point> points) {
  step_schedule schedule;
  schedule.kind = kind;
  schedule.points = std::move(points);
  return schedule;
}

job_config two_sources(step_schedule first, step_schedule second) {
  job_config config;
  config.seed = 7;
  config.sequence_length = 256;
  config.rows_per_rank = 4;
  config.ranks = 2;
  config.mix_by = mix_unit::documents;
  for (int i = 0; i < 2; ++i) {
    source_config source;
    source.name = "s" + std::to_string(i);
    source.weight_schedule = i == 0 ? first : second;
    source.weight = source.weight_schedule.at(0);
    config.sources.push_back(source);
  }
  return config;
}

std::vector<document_meta> docs_of(uint32_t source, uint64_t first,
                                   uint64_t count, uint32_t tokens) {
  std::vector<document_meta> docs;
  for (uint64_t s = first; s < first + count; ++s) {
    document_meta meta;
    meta.source = source;
    meta.sequence = s;
    meta.tokens = tokens + static_cast<uint32_t>(bounded(draw(source, s), tokens));
    meta.key = "s" + std::to_string(source) + ":" + std::to_string(s);
    docs.push_back(meta);
  }
  return docs;
}

// Plans `steps` steps, feeding a source whenever it starves.
std::vector<step_plan> plan_steps(step_planner& planner, int steps,
                                  std::vector<uint64_t>& fed,
                                  uint32_t tokens = 40) {
  std::vector<step_plan> plans;
  while (static_cast<int>(plans.size()) < steps) {
    auto outcome = planner.plan_next();
    if (outcome.plan) {
      plans.push_back(std::move(*outcome.plan));
      continue;
    }
    auto source = *outcome.starved_source;
    planner.add_documents(source, docs_of(source, fed[source], 64, tokens));
    fed[source] += 64;
  }
  return plans;
}

// Documents of each source started in `plan`.
std::map<uint32_t, int> started(const step_plan& plan) {
  std::map<uint32_t, int> count;
  for (const auto& row : plan.rows)
    for (const auto& p : row)
      if (p.starts_document())
        count[p.source]++;
  return count;
}

std::string plan_text(const step_plan& plan) {
  std::string text = std::to_string(plan.step) + "/" +
                     std::to_string(plan.sequence_length) + ":";
  for (const auto& rank : plan.ranks) {
    text += "|";
    for (const auto& row : rank.rows)
      for (const auto& p : row)
        text += p.key + "@" + std::to_string(p.offset) + "+" +
                std::to_string(p.length) + ",";
  }
  return text;
}

}  // namespace

TEST_CASE("piecewise-linear schedule interpolates and holds its ends",
          "[schedule]") {
  auto schedule = make_schedule(step_schedule::shape::piecewise_linear,
                                {{100, 1.0}, {200, 3.0}, {300, 3.0}});
  CHECK(schedule.at(0) == 1.0);
  CHECK(schedule.at(100) == 1.0);
  CHECK(schedule.at(150) == Approx(2.0));
  CHECK(schedule.at(200) == 3.0);
  CHECK(schedule.at(250) == 3.0);
  CHECK(schedule.at(10000) == 3.0);
  CHECK(schedule.next_change_after(0) == 101);
  CHECK(schedule.next_change_after(150) == 151);
  CHECK(schedule.next_change_after(200) == UINT64_MAX);
}

TEST_CASE("stepwise schedule holds each value until the next point",
          "[schedule]") {
  auto schedule = make_schedule(step_schedule::shape::stepwise,
                                {{0, 0.0}, {50, 2.0}, {80, 2.0}, {90, 1.0}});
  CHECK(schedule.at(0) == 0.0);
  CHECK(schedule.at(49) == 0.0);
  CHECK(schedule.at(50) == 2.0);
  CHECK(schedule.at(89) == 2.0);
  CHECK(schedule.at(90) == 1.0);
  CHECK(schedule.next_change_after(10) == 50);
  // The point at 80 repeats the value, so the next change is at 90.
  CHECK(schedule.next_change_after(60) == 90);
  CHECK(schedule.describe() == "stepwise 0:0 50:2 80:2 90:1");
}

TEST_CASE("drawn lengths follow their frequencies and the seed",
          "[schedule]") {
  length_schedule lengths;
  lengths.kind = length_schedule::shape::draw;
  lengths.options = {{4096, 0, 0.9}, {32768, 0, 0.1}};
  int long_steps = 0;
  for (uint64_t step = 0; step < 20000; ++step) {
    auto length = lengths.at(step, 11);
    REQUIRE((length == 4096 || length == 32768));
    long_steps += length == 32768;
    // A pure function of (seed, step).
    REQUIRE(lengths.at(step, 11) == length);
  }
  CHECK(long_steps / 20000.0 == Approx(0.1).margin(0.01));
  int differ = 0;
  for (uint64_t step = 0; step < 200; ++step)
    differ += lengths.at(step, 11) != lengths.at(step, 12);
  CHECK(differ > 0);
  CHECK(lengths.shortest() == 4096);
  CHECK(lengths.longest() == 32768);
}

TEST_CASE("config reads weight and length schedules", "[schedule][config]") {
  overlord::testing::temp_dir dir("schedule-config");
  dir.write("gpt2/encoder.json", "{}");
  dir.write("gpt2/vocab.bpe", "");
  dir.write("a.txt", "alpha");
  dir.write("b.txt", "beta");
  const std::string tokenizer = "gpt2";
  auto yaml = "tokenizer: " + tokenizer + R"(
rows_per_rank: 8
ranks: 2
sequence_length:
  draw: [[512, 0.9], [4096, 0.1]]
cost_model:
  quadratic: 0.001
  vision: {linear: 2, quadratic: 0.01}
autoscale: {enabled: true, headroom: 2, cpu_budget: 6}
sources:
  - name: a
    format: text
    paths: a.txt
    weight: {piecewise_linear: [[0, 1], [1000, 4]]}
  - name: b
    format: text
    paths: b.txt
    weight: {stepwise: [[0, 0], [10, 1]]}
    min_workers: 2
    max_workers: 6
    workers: 3
)";
  auto config = parse_config(yaml, "job.yaml", dir.path().string());
  CHECK(config.varies_length());
  CHECK(config.sequence_length == 4096);
  CHECK(config.shortest_length() == 512);
  CHECK(config.tokens_per_step() == 2 * 8 * 512);
  CHECK(config.rows_per_rank_at(4096) == 1);
  CHECK(config.sources[0].weight_at(500) == Approx(2.5));
  CHECK(config.sources[1].weight_at(9) == 0);
  CHECK(config.sources[1].weight_at(10) == 1);
  CHECK(config.sources[1].min_workers == 2);
  CHECK(config.cost.vision_linear == 2);
  CHECK(config.autoscale.enabled);
  CHECK(config.autoscale.cpu_budget == 6);

  auto fails_with = [&](const std::string& text, const std::string& part) {
    try {
      parse_config(text, "job.yaml", dir.path().string());
      FAIL("accepted: " << text);
    } catch (const overlord::error& e) {
      CHECK_THAT(e.what(), Catch::Contains(part));
    }
  };
  auto base = "tokenizer: " + tokenizer + "\n";
  auto source = "sources: [{name: a, format: text, paths: a.txt}]\n";
  fails_with(base + "sequence_length: {draw: [[512, 0.5], [768, 0.5]]}\n" +
                 source,
             "does not divide");
  fails_with(base + "sequence_length: {stepwise: [[5, 512]]}\n" + source,
             "first entry must be at step 0");
  fails_with(base + "sequence_length: {sometimes: [[0, 512]]}\n" + source,
             "unknown schedule");
  fails_with(base +
                 "sources: [{name: a, format: text, paths: a.txt, weight: "
                 "{piecewise_linear: [[10, 1], [5, 2]]}}]\n",
             "steps must increase");
  fails_with(base +
                 "sources: [{name: a, format: text, paths: a.txt, weight: "
                 "{stepwise: [[0, 1], [20, 0]]}}]\n",
             "all weights are zero at step 20");
  fails_with(base +
                 "sources: [{name: a, format: text, paths: a.txt, "
                 "min_workers: 4, max_workers: 2}]\n",
             "exceeds max_workers");
}

TEST_CASE("overrides reach keys inside maps", "[schedule][config]") {
  overlord::testing::temp_dir dir("schedule-override");
  dir.write("gpt2/encoder.json", "{}");
  dir.write("gpt2/vocab.bpe", "");
  dir.write("a.txt", "alpha");
  const std::string yaml =
      "tokenizer: gpt2\nsources: [{name: a, format: text, paths: a.txt}]\n";
  auto config = parse_config(yaml, "job.yaml", dir.path().string(),
                             {{"autoscale.enabled", "true"},
                              {"autoscale.cpu_budget", "3"},
                              {"cost_model.quadratic", "0.5"}});
  CHECK(config.autoscale.enabled);
  CHECK(config.autoscale.cpu_budget == 3);
  CHECK(config.cost.quadratic == 0.5);
  try {
    parse_config(yaml, "job.yaml", dir.path().string(),
                 {{"autoscale.speed", "9"}});
    FAIL("accepted an unknown key");
  } catch (const overlord::error& e) {
    CHECK_THAT(e.what(), Catch::Contains("unknown key 'speed' in autoscale"));
  }
  try {
    parse_config(yaml, "job.yaml", dir.path().string(),
                 {{"autoscale.headroom", "0.5"}});
    FAIL("accepted headroom 0.5");
  } catch (const overlord::error& e) {
    CHECK_THAT(e.what(), Catch::Contains("--set autoscale.headroom=0.5"));
  }
}

TEST_CASE("a source switched on by a schedule joins at its share at once",
          "[schedule][planner]") {
  auto config = two_sources(
      step_schedule::constant(1),
      make_schedule(step_schedule::shape::stepwise, {{0, 0}, {20, 1}}));
  step_planner planner(config);
  std::vector<uint64_t> fed(2, 0);
  auto plans = plan_steps(planner, 40, fed);
  for (int step = 0; step < 20; ++step)
    CHECK(started(plans[step]).count(1) == 0);
  // Without the rebase the second source would take every draw until it
  // caught up with the twenty steps it missed.
  // Per step the counts differ by what packing carries over; over twenty
  // steps of about 30 documents each they must stay close.
  int first = 0, second = 0;
  for (int step = 20; step < 40; ++step) {
    auto count = started(plans[step]);
    CHECK(count[0] > 0);
    CHECK(count[1] > 0);
    first += count[0];
    second += count[1];
  }
  CHECK(std::abs(first - second) <= 8);
}

TEST_CASE("set weights scale the schedule from the step they take effect",
          "[schedule][planner]") {
  auto config = two_sources(
      make_schedule(step_schedule::shape::piecewise_linear, {{0, 1}, {100, 3}}),
      step_schedule::constant(1));
  step_planner planner(config);
  CHECK(planner.weights_at(50) == std::vector<double>{2, 1});
  std::vector<uint64_t> fed(2, 0);
  plan_steps(planner, 50, fed);
  planner.set_weights({4, 1});
  // 4 at step 50, then the schedule's growth: 4 * 2.5 / 2 at step 75.
  CHECK(planner.weights_at(50) == std::vector<double>{4, 1});
  CHECK(planner.weights_at(75)[0] == Approx(5.0));
  CHECK(planner.weights_at(10) == std::vector<double>{1.2, 1});
}

TEST_CASE("set weights keep other sources' schedules", "[schedule][planner]") {
  // The second source joins at step 30. Setting the first one at step 10,
  // when the second is scheduled at zero, must not keep it at zero.
  auto config = two_sources(
      step_schedule::constant(1),
      make_schedule(step_schedule::shape::stepwise, {{0, 0}, {30, 2}}));
  step_planner planner(config);
  std::vector<uint64_t> fed(2, 0);
  plan_steps(planner, 10, fed);
  planner.set_weights({3, 0}, {true, false});
  CHECK(planner.weights_at(10) == std::vector<double>{3, 0});
  CHECK(planner.weights_at(30) == std::vector<double>{3, 2});

  // Setting the second source at step 20, where its schedule is zero,
  // keeps it at the value set and leaves the first at its own.
  plan_steps(planner, 10, fed);
  planner.set_weights({0, 5}, {false, true});
  CHECK(planner.weights_at(20) == std::vector<double>{3, 5});
  CHECK(planner.weights_at(40) == std::vector<double>{3, 5});

  // A saved state keeps the step each weight took effect at.
  auto saved = planner.save();
  step_planner resumed(config);
  resumed.restore(saved);
  CHECK(resumed.weights_at(15) == std::vector<double>{3, 0});
  CHECK(resumed.weights_at(40) == std::vector<double>{3, 5});
}

TEST_CASE("set weights find a later step without weight",
          "[schedule][planner]") {
  auto config = two_sources(
      make_schedule(step_schedule::shape::piecewise_linear, {{0, 1}, {100, 0}}),
      step_schedule::constant(1));
  step_planner planner(config);
  std::vector<uint64_t> fed(2, 0);
  plan_steps(planner, 5, fed);
  // The first source fades out by step 100, so zeroing the second one
  // leaves no weight there.
  CHECK(planner.first_step_without_weight({0, 0}, {false, true}) == 100u);
  CHECK(planner.first_step_without_weight({0, 0}, {true, true}) == 5u);
  CHECK(!planner.first_step_without_weight({0, 2}, {false, true}));
}

TEST_CASE("long and short steps keep the token budget", "[schedule][planner]") {
  auto config = two_sources(step_schedule::constant(1),
                            step_schedule::constant(2));
  config.mix_by = mix_unit::tokens;
  config.lengths.kind = length_schedule::shape::draw;
  config.lengths.options = {{256, 0, 0.7}, {1024, 0, 0.3}};
  config.sequence_length = 1024;
  step_planner planner(config);
  std::vector<uint64_t> fed(2, 0);
  auto plans = plan_steps(planner, 60, fed, 300);
  int long_steps = 0;
  for (const auto& plan : plans) {
    REQUIRE(plan.sequence_length == config.length_at(plan.step));
    long_steps += plan.sequence_length == 1024;
    CHECK(plan.rows.size() * plan.sequence_length == config.tokens_per_step());
    for (const auto& rank : plan.ranks) {
      CHECK(rank.sequence_length == plan.sequence_length);
      CHECK(rank.rows.size() == plan.rows.size() / 2);
    }
    for (const auto& row : plan.rows) {
      uint32_t used = 0;
      for (const auto& p : row)
        used += p.length;
      CHECK(used <= plan.sequence_length);
    }
  }
  CHECK(long_steps > 0);
  CHECK(long_steps < 60);
}

TEST_CASE("saved planner state resumes schedules exactly",
          "[schedule][planner]") {
  auto config = two_sources(
      make_schedule(step_schedule::shape::piecewise_linear, {{0, 1}, {30, 0.2}}),
      make_schedule(step_schedule::shape::stepwise, {{0, 0}, {10, 1}, {25, 3}}));
  config.mix_by = mix_unit::tokens;
  config.lengths.kind = length_schedule::shape::stepwise;
  config.lengths.options = {{256, 0, 0}, {512, 15, 0}, {256, 35, 0}};
  config.sequence_length = 512;

  step_planner straight(config);
  std::vector<uint64_t> fed(2, 0);
  plan_steps(straight, 5, fed);
  straight.set_weights({1, 2});
  auto reference = plan_steps(straight, 45, fed);

  step_planner first(config);
  std::vector<uint64_t> fed_first(2, 0);
  plan_steps(first, 5, fed_first);
  first.set_weights({1, 2});
  auto head = plan_steps(first, 17, fed_first);
  auto saved = first.save();

  step_planner resumed(config);
  resumed.restore(saved);
  std::vector<uint64_t> fed_resumed = saved.next_unplanned;
  auto tail = plan_steps(resumed, 28, fed_resumed);
  head.insert(head.end(), tail.begin(), tail.end());
  REQUIRE(head.size() == reference.size());
  for (size_t i = 0; i < reference.size(); ++i)
    REQUIRE(plan_text(head[i]) == plan_text(reference[i]));
}

TEST_CASE("vision cost adds to the language model's", "[schedule][cost]") {
  cost_model model;
  model.linear = 1;
  model.quadratic = 0.5;
  model.vision_linear = 2;
  model.vision_quadratic = 0.25;
  piece image_doc;
  image_doc.length = 10;
  image_doc.document_tokens = 10;
  image_doc.patches = 8;
  piece text_doc;
  text_doc.length = 4;
  text_doc.document_tokens = 4;
  // Language model: 10 + 50 and 4 + 8; vision encoder: 16 + 16.
  CHECK(model.row_cost({image_doc, text_doc}) == Approx(104.0));
  model.masking = cost_model::attention::row;
  // 14 + 98 for the fused row, plus the image.
  CHECK(model.row_cost({image_doc, text_doc}) == Approx(144.0));
}
