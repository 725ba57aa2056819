#include <catch2/catch.hpp>

#include "planner/topology.hpp"
#include "transport/batch_builder.hpp"
#include "transport/wire.hpp"

using namespace overlord;
using namespace overlord::planner;

TEST_CASE("topology coordinates follow tp cp dp pp order", "[topology]") {
  topology_config t;
  t.dp = 2;
  t.tp = 4;
  t.pp = 3;
  t.cp = 2;
  // rank = ((pp * dp + dp_rank) * cp + cp_rank) * tp + tp_rank
  auto c = coordinates_of(t, ((2 * 2 + 1) * 2 + 1) * 4 + 3);
  CHECK(c.pp == 2);
  CHECK(c.dp == 1);
  CHECK(c.cp == 1);
  CHECK(c.tp == 3);
  CHECK_THROWS(coordinates_of(t, 2 * 4 * 3 * 2));
}

TEST_CASE("topology consumers first stage only", "[topology]") {
  topology_config t;
  t.dp = 2;
  t.tp = 2;
  t.pp = 2;
  auto list = consumers(t);
  // tp rank 0 of stage 0 in each replica: global ranks 0 and 2.
  REQUIRE(list.size() == 2);
  CHECK(list[0].global_rank == 0);
  CHECK(list[0].replica == 0);
  CHECK(list[1].global_rank == 2);
  CHECK(list[1].replica == 1);
  CHECK_FALSE(consumer_of(t, 1));  // tp rank 1
  CHECK_FALSE(consumer_of(t, 4));  // last stage
}

TEST_CASE("topology consumers first and last stages", "[topology]") {
  topology_config t;
  t.dp = 2;
  t.tp = 2;
  t.pp = 3;
  t.last_stage_consumes = true;
  auto list = consumers(t);
  REQUIRE(list.size() == 4);
  // Stage 0: ranks 0 and 2; stage 2: ranks 8 and 10.
  CHECK(list[2].global_rank == 8);
  CHECK(list[2].stage == 2);
  CHECK(list[2].replica == 0);
  CHECK(list[3].global_rank == 10);
  CHECK(list[3].replica == 1);
  CHECK_FALSE(consumer_of(t, 4));  // middle stage
}

TEST_CASE("topology context parallel consumers", "[topology]") {
  topology_config t;
  t.dp = 1;
  t.tp = 2;
  t.cp = 4;
  auto list = consumers(t);
  REQUIRE(list.size() == 4);
  for (uint32_t i = 0; i < 4; ++i) {
    CHECK(list[i].global_rank == i * 2);
    CHECK(list[i].cp_rank == i);
    CHECK(list[i].replica == 0);
  }
}

TEST_CASE("cp chunks pair early with late", "[topology]") {
  CHECK(cp_chunks(1, 0) == std::make_pair(0u, 1u));
  CHECK(cp_chunks(2, 0) == std::make_pair(0u, 3u));
  CHECK(cp_chunks(2, 1) == std::make_pair(1u, 2u));
  CHECK(cp_chunks(4, 3) == std::make_pair(3u, 4u));
  CHECK_THROWS(cp_chunks(2, 2));
}

TEST_CASE("cp chunks even out causal work", "[topology]") {
  // Causal attention work of position p is p + 1; each cp rank's two
  // chunks sum to the same work.
  const uint32_t length = 64;
  for (uint32_t cp : {2u, 4u, 8u}) {
    const uint32_t chunk = length / (2 * cp);
    std::vector<uint64_t> work(cp, 0);
    for (uint32_t rank = 0; rank < cp; ++rank) {
      auto [first, second] = cp_chunks(cp, rank);
      for (uint32_t c : {first, second})
        for (uint32_t p = c * chunk; p < (c + 1) * chunk; ++p)
          work[rank] += p + 1;
    }
    for (uint32_t rank = 1; rank < cp; ++rank)
      CHECK(work[rank] == work[0]);
  }
}

TEST_CASE("batch slices rows for cp ranks", "[topology]") {
  // One row of 8 tokens 0..7 (one document of 8, EOS included), cp = 2:
  // chunks of 2; rank 0 gets chunks 0 and 3, rank 1 chunks 1 and 2.
  planner::rank_plan plan;
  plan.step = 4;
  planner::piece p;
  p.key = "d";
  p.length = 8;
  p.document_tokens = 8;
  plan.rows = {{p}};
  std::vector<int32_t> tokens = {10, 11, 12, 13, 14, 15, 16, 17};
  transport::batch_layout layout;
  layout.sequence_length = 8;
  layout.pad_id = 99;
  layout.source_names = {"s"};
  layout.cp_size = 2;
  auto rows = transport::lay_out_rows(plan, layout,
                                      [&](size_t, size_t) { return tokens.data(); });

  auto expect = [&](uint32_t cp_rank, std::vector<int32_t> want_tokens,
                    std::vector<int32_t> want_positions,
                    std::vector<uint32_t> want_chunks) {
    auto buffer = transport::serialize_batch(plan, layout, rows, cp_rank);
    auto* batch =
        transport::verify_reply(buffer.data(), buffer.size())->body_as_Batch();
    REQUIRE(batch);
    CHECK(batch->cp_size() == 2);
    CHECK(batch->cp_rank() == cp_rank);
    CHECK(batch->row_length() == 4);
    CHECK(std::vector<uint32_t>(batch->cp_chunks()->begin(),
                                batch->cp_chunks()->end()) == want_chunks);
    CHECK(std::vector<int32_t>(batch->tokens()->begin(), batch->tokens()->end()) ==
          want_tokens);
    CHECK(std::vector<int32_t>(batch->position_ids()->begin(),
                               batch->position_ids()->end()) == want_positions);
    // cu_seqlens describe the whole row before slicing.
    CHECK(std::vector<int32_t>(batch->cu_seqlens()->begin(),
                               batch->cu_seqlens()->end()) ==
          std::vector<int32_t>{0, 8});
    return transport::batch_digest(*batch);
  };
  auto first = expect(0, {10, 11, 16, 17}, {0, 1, 6, 7}, {0, 3});
  auto second = expect(1, {12, 13, 14, 15}, {2, 3, 4, 5}, {1, 2});
  CHECK(first != second);
}
