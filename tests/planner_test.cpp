#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>

#include "common/error.hpp"
#include "planner/mixture.hpp"
#include "planner/packer.hpp"
#include "planner/rng.hpp"
#include "planner/step_planner.hpp"

using namespace overlord::planner;

namespace {

job_config make_config(std::vector<double> weights, int sequence_length,
                       int rows_per_rank, int ranks,
                       mix_unit unit = mix_unit::tokens) {
  job_config config;
  config.seed = 42;
  config.sequence_length = sequence_length;
  config.rows_per_rank = rows_per_rank;
  config.ranks = ranks;
  config.mix_by = unit;
  for (size_t i = 0; i < weights.size(); ++i) {
    source_config source;
    source.name = "s" + std::to_string(i);
    source.weight = weights[i];
    config.sources.push_back(source);
  }
  return config;
}

// Document lengths that vary per source and position, so packing sees a
// realistic spread (a few tokens to several rows).
uint32_t synthetic_length(uint32_t source, uint64_t sequence) {
  auto r = draw(source + 1, sequence);
  switch (source % 3) {
    case 0:
      return 20 + static_cast<uint32_t>(bounded(r, 400));
    case 1:
      return 500 + static_cast<uint32_t>(bounded(r, 3000));
    default:
      return 1 + static_cast<uint32_t>(bounded(r, 60));
  }
}

std::vector<document_meta> synthetic_docs(uint32_t source, uint64_t first,
                                          uint64_t count) {
  std::vector<document_meta> docs;
  for (uint64_t s = first; s < first + count; ++s) {
    document_meta meta;
    meta.source = source;
    meta.sequence = s;
    meta.tokens = synthetic_length(source, s);
    meta.key = "s" + std::to_string(source) + ":" + std::to_string(s);
    docs.push_back(meta);
  }
  return docs;
}

// Plans `steps` steps, feeding each source more documents whenever the
// planner reports it starved.
std::vector<step_plan> run_planner(step_planner& planner, size_t sources,
                                   int steps, uint64_t feed = 64) {
  std::vector<uint64_t> fed(sources, 0);
  std::vector<step_plan> plans;
  while (static_cast<int>(plans.size()) < steps) {
    auto outcome = planner.plan_next();
    if (outcome.plan) {
      plans.push_back(std::move(*outcome.plan));
      continue;
    }
    auto source = *outcome.starved_source;
    planner.add_documents(source, synthetic_docs(source, fed[source], feed));
    fed[source] += feed;
  }
  return plans;
}

uint64_t row_tokens(const row_plan& row) {
  uint64_t total = 0;
  for (const auto& p : row)
    total += p.length;
  return total;
}

}  // namespace

TEST_CASE("shuffled order is a seeded permutation", "[rng]") {
  auto a = epoch_shard_order(100, 7, "mail", 0);
  auto b = epoch_shard_order(100, 7, "mail", 0);
  auto c = epoch_shard_order(100, 7, "mail", 1);
  auto d = epoch_shard_order(100, 8, "mail", 0);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a != d);
  std::set<uint32_t> seen(a.begin(), a.end());
  CHECK(seen.size() == 100);
  CHECK(*seen.rbegin() == 99);
}

TEST_CASE("split document into row-sized pieces", "[packer]") {
  document_meta meta{1, 5, 0, 2500, "k"};
  auto pieces = split_document(meta, 1024);
  REQUIRE(pieces.size() == 3);
  CHECK(pieces[0].offset == 0);
  CHECK(pieces[0].length == 1024);
  CHECK(pieces[1].offset == 1024);
  CHECK(pieces[2].offset == 2048);
  CHECK(pieces[2].length == 452);
  CHECK(pieces[2].ends_document());
  CHECK(pieces[0].starts_document());
  CHECK_FALSE(pieces[1].starts_document());
}

TEST_CASE("pack rows first fit decreasing", "[packer]") {
  auto piece_of = [](uint64_t sequence, uint32_t length) {
    piece p;
    p.sequence = sequence;
    p.length = length;
    p.document_tokens = length;
    return p;
  };
  std::vector<piece> fresh = {piece_of(0, 3), piece_of(1, 8), piece_of(2, 5),
                              piece_of(3, 2), piece_of(4, 9)};
  auto packed = pack_rows({}, fresh, 2, 10);
  REQUIRE(packed.rows.size() == 2);
  // Decreasing: 9 -> row 0, 8 -> row 1, 5 fits nowhere, 3 nowhere, 2 -> row 1.
  REQUIRE(packed.rows[0].size() == 1);
  CHECK(packed.rows[0][0].sequence == 4);
  REQUIRE(packed.rows[1].size() == 2);
  CHECK(packed.rows[1][0].sequence == 1);
  CHECK(packed.rows[1][1].sequence == 3);
  REQUIRE(packed.leftover.size() == 2);
  CHECK(packed.leftover[0].sequence == 0);
  CHECK(packed.leftover[1].sequence == 2);
}

TEST_CASE("pack rows places carried pieces first", "[packer]") {
  piece carried;
  carried.sequence = 9;
  carried.length = 6;
  carried.document_tokens = 6;
  piece big;
  big.sequence = 1;
  big.length = 10;
  big.document_tokens = 10;
  auto packed = pack_rows({carried}, {big}, 1, 10);
  REQUIRE(packed.rows[0].size() == 1);
  CHECK(packed.rows[0][0].sequence == 9);
  REQUIRE(packed.leftover.size() == 1);
  CHECK(packed.leftover[0].sequence == 1);
}

TEST_CASE("step planner conserves every token", "[planner]") {
  auto config = make_config({3, 2, 1}, 512, 4, 2);
  step_planner planner(config);
  auto plans = run_planner(planner, 3, 200);

  // Every planned piece is a distinct slice; together with the pieces
  // still carried they cover each drawn document exactly once.
  std::map<std::pair<uint32_t, uint64_t>, uint64_t> covered;
  std::set<std::tuple<uint32_t, uint64_t, uint32_t>> slices;
  for (const auto& plan : plans) {
    REQUIRE(plan.rows.size() == 8);
    uint64_t padding = 0;
    for (const auto& row : plan.rows) {
      REQUIRE(row_tokens(row) <= 512);
      padding += 512 - row_tokens(row);
      for (const auto& p : row) {
        CHECK(slices.insert({p.source, p.sequence, p.offset}).second);
        covered[{p.source, p.sequence}] += p.length;
      }
    }
    CHECK(plan.padding_tokens == padding);
    REQUIRE(plan.ranks.size() == 2);
    for (const auto& rank : plan.ranks)
      CHECK(rank.rows.size() == 4);
  }
  uint64_t incomplete = 0;
  for (const auto& [doc, tokens] : covered) {
    auto expected = synthetic_length(doc.first, doc.second);
    CHECK(tokens <= expected);
    if (tokens < expected)
      ++incomplete;
  }
  // Only documents still partly carried into the next step are incomplete.
  CHECK(incomplete <= 8);
}

TEST_CASE("step planner keeps low padding", "[planner]") {
  auto config = make_config({3, 2, 1}, 512, 4, 2);
  step_planner planner(config);
  auto plans = run_planner(planner, 3, 100);
  uint64_t padding = 0;
  for (const auto& plan : plans)
    padding += plan.padding_tokens;
  double fraction = static_cast<double>(padding) / (100.0 * 8 * 512);
  CHECK(fraction < 0.05);
}

TEST_CASE("mixture by documents within one document", "[mixture]") {
  mixture mix({0.5, 0.3, 0.2}, 1);
  std::vector<uint64_t> counts(3, 0);
  for (uint64_t i = 0; i < 10000; ++i) {
    auto source = mix.pick(i / 100, i % 100);
    mix.record(source, 1);
    ++counts[source];
    for (size_t s = 0; s < 3; ++s)
      REQUIRE(std::abs(static_cast<double>(counts[s]) -
                       mix.shares()[s] * (i + 1)) <= 1.0);
  }
  CHECK(counts[0] == 5000);
  CHECK(counts[1] == 3000);
  CHECK(counts[2] == 2000);
}

TEST_CASE("mixture by tokens tracks weights", "[mixture]") {
  auto config = make_config({0.5, 0.3, 0.2}, 1024, 8, 2, mix_unit::tokens);
  step_planner planner(config);
  std::vector<uint64_t> fed(3, 0);
  uint64_t drawn_documents = 0;
  while (drawn_documents < 10000) {
    auto outcome = planner.plan_next();
    if (!outcome.plan) {
      auto s = *outcome.starved_source;
      planner.add_documents(s, synthetic_docs(s, fed[s], 64));
      fed[s] += 64;
      continue;
    }
    for (const auto& row : outcome.plan->rows)
      for (const auto& p : row)
        drawn_documents += p.starts_document();
  }
  const auto& mix = planner.current_mixture();
  // The largest synthetic document has 3500 tokens.
  for (size_t s = 0; s < 3; ++s) {
    double observed = mix.drawn()[s] / mix.total();
    double tolerance = std::max(0.01, 3500.0 / mix.total());
    CHECK(std::abs(observed - mix.shares()[s]) <= tolerance);
  }
}

TEST_CASE("mixture weights are relative", "[mixture]") {
  auto a = make_config({2, 6}, 256, 2, 2);
  auto b = make_config({0.25, 0.75}, 256, 2, 2);
  step_planner planner_a(a);
  step_planner planner_b(b);
  auto plans_a = run_planner(planner_a, 2, 50);
  auto plans_b = run_planner(planner_b, 2, 50);
  for (size_t i = 0; i < plans_a.size(); ++i) {
    REQUIRE(plans_a[i].rows.size() == plans_b[i].rows.size());
    for (size_t r = 0; r < plans_a[i].rows.size(); ++r) {
      REQUIRE(plans_a[i].rows[r].size() == plans_b[i].rows[r].size());
      for (size_t k = 0; k < plans_a[i].rows[r].size(); ++k) {
        CHECK(plans_a[i].rows[r][k].key == plans_b[i].rows[r][k].key);
        CHECK(plans_a[i].rows[r][k].offset == plans_b[i].rows[r][k].offset);
      }
    }
  }
}

TEST_CASE("mixture tiny weight stays in range", "[mixture]") {
  mixture mix({1e-300, 1, 0}, 3);
  std::vector<uint64_t> counts(3, 0);
  for (uint64_t i = 0; i < 1000; ++i) {
    auto source = mix.pick(0, i);
    REQUIRE(source < 3);
    mix.record(source, 1);
    ++counts[source];
  }
  CHECK(counts[2] == 0);
  CHECK(counts[1] >= 999);
}

TEST_CASE("starved planner changes nothing", "[planner]") {
  auto config = make_config({1, 1}, 256, 2, 1);
  step_planner fed_late(config);
  step_planner fed_early(config);
  fed_early.add_documents(0, synthetic_docs(0, 0, 500));
  fed_early.add_documents(1, synthetic_docs(1, 0, 500));

  // Feed one document at a time; every starved call must be a no-op.
  std::vector<uint64_t> fed(2, 0);
  for (int step = 0; step < 20; ++step) {
    step_planner::outcome late;
    while (!(late = fed_late.plan_next()).plan) {
      auto s = *late.starved_source;
      fed_late.add_documents(s, synthetic_docs(s, fed[s], 1));
      ++fed[s];
    }
    auto early = fed_early.plan_next();
    REQUIRE(early.plan);
    REQUIRE(late.plan->rows.size() == early.plan->rows.size());
    for (size_t r = 0; r < late.plan->rows.size(); ++r) {
      REQUIRE(late.plan->rows[r].size() == early.plan->rows[r].size());
      for (size_t k = 0; k < late.plan->rows[r].size(); ++k)
        CHECK(late.plan->rows[r][k].key == early.plan->rows[r][k].key);
    }
  }
}

TEST_CASE("global rows do not depend on ranks", "[planner]") {
  // 16 global rows as 2x8, 4x4 and 8x2: the same documents in the same
  // rows, only split differently.
  std::vector<std::vector<step_plan>> runs;
  for (int ranks : {2, 4, 8}) {
    step_planner planner(make_config({2, 1, 1}, 256, 16 / ranks, ranks));
    runs.push_back(run_planner(planner, 3, 30));
    for (const auto& plan : runs.back())
      for (const auto& rank : plan.ranks)
        CHECK(static_cast<int>(rank.rows.size()) == 16 / ranks);
  }
  for (size_t step = 0; step < 30; ++step)
    for (size_t r = 0; r < 16; ++r) {
      const auto& row2 = runs[0][step].rows[r];
      for (size_t other : {1, 2}) {
        const auto& row = runs[other][step].rows[r];
        REQUIRE(row.size() == row2.size());
        for (size_t k = 0; k < row.size(); ++k)
          CHECK(row[k].key == row2[k].key);
      }
    }
}

TEST_CASE("split keeps an atomic document whole", "[packer]") {
  document_meta meta;
  meta.key = "images-0.tar:000001";
  meta.tokens = 700;
  meta.patches = 600;
  meta.atomic = true;
  auto pieces = split_document(meta, 1024);
  REQUIRE(pieces.size() == 1);
  CHECK(pieces[0].length == 700);
  CHECK(pieces[0].patches == 600);
  CHECK(pieces[0].atomic);

  meta.tokens = 1025;
  CHECK_THROWS_AS(split_document(meta, 1024), overlord::error);
}

TEST_CASE("packer never splits atomic documents", "[packer]") {
  // Source 1 announces atomic image-text documents of 300 to 1000 tokens
  // among long text documents of source 0, which are split.
  auto config = make_config({1, 2}, 1024, 4, 2, mix_unit::documents);
  step_planner planner(config);
  std::vector<uint64_t> fed(2, 0);
  std::map<uint64_t, uint32_t> atomic_tokens;
  std::map<uint64_t, uint32_t> placed;
  for (int planned = 0; planned < 150;) {
    auto outcome = planner.plan_next();
    if (outcome.plan) {
      ++planned;
      for (const auto& row : outcome.plan->rows) {
        REQUIRE(row_tokens(row) <= 1024);
        for (const auto& p : row) {
          if (p.source != 1)
            continue;
          CHECK(p.atomic);
          CHECK(p.offset == 0);
          CHECK(p.length == p.document_tokens);
          CHECK(++placed[p.sequence] == 1);
        }
      }
      continue;
    }
    auto source = *outcome.starved_source;
    std::vector<document_meta> docs;
    for (int i = 0; i < 16; ++i, ++fed[source]) {
      document_meta meta;
      meta.source = source;
      meta.sequence = fed[source];
      meta.key = "s" + std::to_string(source) + ":" + std::to_string(meta.sequence);
      auto r = draw(source + 7, meta.sequence);
      if (source == 1) {
        meta.patches = 256 + static_cast<uint32_t>(bounded(r, 577));
        meta.tokens = meta.patches + 2 + static_cast<uint32_t>(bounded(r >> 20, 160));
        meta.atomic = true;
        atomic_tokens[meta.sequence] = meta.tokens;
      } else {
        meta.tokens = 200 + static_cast<uint32_t>(bounded(r, 3000));
      }
      docs.push_back(meta);
    }
    planner.add_documents(source, docs);
  }
  CHECK(placed.size() > 100);
}

TEST_CASE("packer is deterministic with atomic documents", "[packer]") {
  std::vector<piece> fresh;
  for (uint32_t i = 0; i < 12; ++i) {
    piece p;
    p.source = i % 2;
    p.sequence = i;
    p.length = 100 + 37 * i;
    p.document_tokens = p.length;
    p.atomic = p.source == 1;
    p.patches = p.atomic ? p.length - 10 : 0;
    fresh.push_back(p);
  }
  auto first = pack_rows({}, fresh, 3, 1024);
  auto second = pack_rows({}, fresh, 3, 1024);
  REQUIRE(first.rows.size() == second.rows.size());
  for (size_t row = 0; row < first.rows.size(); ++row) {
    REQUIRE(first.rows[row].size() == second.rows[row].size());
    for (size_t i = 0; i < first.rows[row].size(); ++i)
      CHECK(first.rows[row][i].sequence == second.rows[row][i].sequence);
  }
  // Whatever does not fit stays whole in the leftover.
  for (const auto& p : first.leftover)
    CHECK(p.length == p.document_tokens);
}
