// bpe_merger's two priority-queue strategies must give exactly the ids of
// js-tiktoken's bytePairMerge loop, which rescans every adjacent pair and
// merges the one with the lowest merged id, leftmost on ties. The tests run
// all three on random pair tables and inputs.

#include <catch2/catch.hpp>

#include <random>
#include <set>
#include <utility>
#include <vector>

#include "sources/bpe_merge.hpp"

namespace {

using overlord::sources::bpe_merger;
using overlord::sources::bpe_pair_table;

// js-tiktoken's bytePairMerge, with the pair table in place of its
// concatenated-bytes lookup.
std::vector<int32_t> merge_like_js_tiktoken(const bpe_pair_table& pairs,
                                            std::vector<int32_t> parts) {
  while (parts.size() > 1) {
    int32_t lowest = -1;
    std::size_t lowest_index = 0;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      const int32_t merged = pairs.find(parts[i], parts[i + 1]);
      if (merged >= 0 && (lowest < 0 || merged < lowest)) {
        lowest = merged;
        lowest_index = i;
      }
    }
    if (lowest < 0)
      break;
    parts[lowest_index] = lowest;
    parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(lowest_index) + 1);
  }
  return parts;
}

// A random table over ids [0, id_count): ids below `alphabet_size` are the
// input symbols, and each other id is the merge of one or two random pairs.
// The pairs come from no byte strings, so merged ids follow no order and a
// part may even merge with its own result. That exercises more orderings
// of the queues than a real vocabulary does.
bpe_pair_table make_random_table(std::mt19937& random, int32_t alphabet_size,
                                 int32_t id_count) {
  std::uniform_int_distribution<int32_t> any_id(0, id_count - 1);
  std::uniform_int_distribution<int32_t> symbol(0, alphabet_size - 1);
  std::set<std::pair<int32_t, int32_t>> used;
  std::vector<bpe_pair_table::entry> entries;
  for (int32_t merged = alphabet_size; merged < id_count; ++merged) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      // Half of the pairs use input symbols, so that merges start often.
      const int32_t left = attempt == 0 ? symbol(random) : any_id(random);
      const int32_t right = any_id(random) % (attempt == 0 ? alphabet_size : id_count);
      if (used.insert({left, right}).second)
        entries.push_back({left, right, merged});
    }
  }
  bpe_pair_table table;
  table.build(entries);
  return table;
}

std::vector<int32_t> run(bpe_merger& merger, const bpe_pair_table& table,
                         const std::vector<int32_t>& input,
                         bpe_merger::strategy chosen) {
  std::vector<int32_t> out;
  merger.merge(table, input.data(), input.size(), out, chosen);
  return out;
}

}  // namespace

TEST_CASE("bpe_pair_table finds each entry", "[bpe]") {
  bpe_pair_table table;
  table.build({{1, 2, 10}, {2, 1, 11}, {10, 10, 12}});
  CHECK(table.find(1, 2) == 10);
  CHECK(table.find(2, 1) == 11);
  CHECK(table.find(10, 10) == 12);
  CHECK(table.find(1, 1) == -1);
  CHECK(table.find(2, 2) == -1);
  CHECK(table.merged_id_limit() == 13);
}

TEST_CASE("bpe_merger merges lowest id leftmost first", "[bpe]") {
  // ids: 0 = a, 1 = b; 2 = aa, 3 = ab, 4 = aab
  bpe_pair_table table;
  table.build({{0, 0, 2}, {0, 1, 3}, {2, 1, 4}});
  bpe_merger merger;
  for (const auto chosen : {bpe_merger::strategy::binary_heap,
                            bpe_merger::strategy::id_buckets}) {
    INFO("strategy " << static_cast<int>(chosen));
    // "aaa": both pairs are aa; the leftmost merges, so aa + a remains.
    CHECK(run(merger, table, {0, 0, 0}, chosen) == std::vector<int32_t>{2, 0});
    // "aab": aa (2) before ab (3), then aa + b merges to aab (4).
    CHECK(run(merger, table, {0, 0, 1}, chosen) == std::vector<int32_t>{4});
    // "aaaa": two aa merges, and aa + aa does not merge.
    CHECK(run(merger, table, {0, 0, 0, 0}, chosen) ==
          std::vector<int32_t>{2, 2});
    CHECK(run(merger, table, {1}, chosen) == std::vector<int32_t>{1});
    CHECK(run(merger, table, {}, chosen).empty());
  }
}

TEST_CASE("bpe_merger strategies match js-tiktoken order", "[bpe]") {
  std::mt19937 random(20240611);
  bpe_merger merger;
  std::size_t compared = 0;

  for (int table_index = 0; table_index < 40; ++table_index) {
    const int32_t alphabet_size = 2 + table_index % 5;
    const int32_t id_count = alphabet_size + 20 + 10 * table_index;
    const bpe_pair_table table =
        make_random_table(random, alphabet_size, id_count);
    std::uniform_int_distribution<int32_t> symbol(0, alphabet_size - 1);

    for (int input_index = 0; input_index < 25; ++input_index) {
      // Lengths on both sides of the automatic strategy's threshold.
      const std::size_t length = input_index % 5 == 0 ? 300 + input_index * 10
                                                      : 1 + input_index * 3;
      std::vector<int32_t> input(length);
      for (auto& value : input)
        value = symbol(random);

      const std::vector<int32_t> expected =
          merge_like_js_tiktoken(table, input);
      INFO("table " << table_index << ", input " << input_index
                    << ", length " << length);
      CHECK(run(merger, table, input, bpe_merger::strategy::binary_heap) ==
            expected);
      CHECK(run(merger, table, input, bpe_merger::strategy::id_buckets) ==
            expected);
      CHECK(run(merger, table, input, bpe_merger::strategy::automatic) ==
            expected);
      ++compared;
    }
  }
  CHECK(compared == 1000);
}
