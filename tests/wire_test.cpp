#include <catch2/catch.hpp>

#include "transport/batch_builder.hpp"
#include "transport/wire.hpp"

using namespace overlord;

namespace {

planner::piece make_piece(uint32_t source, uint64_t sequence,
                          uint32_t offset, uint32_t length,
                          uint32_t document_tokens, const std::string& key) {
  planner::piece p;
  p.source = source;
  p.sequence = sequence;
  p.key = key;
  p.offset = offset;
  p.length = length;
  p.document_tokens = document_tokens;
  return p;
}

// Two rows of 8: row 0 holds a whole 3-token document and the first 5
// tokens of a 7-token one; row 1 holds its last 2 tokens, then padding.
struct two_row_batch {
  planner::rank_plan plan;
  std::vector<std::vector<int32_t>> payloads;
  transport::batch_layout layout;

  two_row_batch() {
    plan.step = 12;
    plan.rank = 1;
    plan.rows = {{make_piece(0, 0, 0, 3, 3, "a:1"), make_piece(1, 4, 0, 5, 7, "b")},
                 {make_piece(1, 4, 5, 2, 7, "b")}};
    // Document a is 10 11 EOS(99); document b is 20..25 EOS(99). A piece
    // that does not end its document carries one extra label token.
    payloads = {{10, 11, 99}, {20, 21, 22, 23, 24, 25}, {25, 99}};
    layout.sequence_length = 8;
    layout.pad_id = 99;
    layout.source_names = {"mail", "books"};
  }

  flatbuffers::DetachedBuffer build() const {
    std::vector<size_t> first = {0, 2};
    return transport::build_batch(plan, layout, [&](size_t row, size_t i) {
      return payloads[first[row] + i].data();
    });
  }
};

template <class T>
std::vector<T> to_vector(const flatbuffers::Vector<T>* values) {
  return std::vector<T>(values->begin(), values->end());
}

}  // namespace

TEST_CASE("request round trip", "[wire]") {
  auto frame = transport::encode_request({123456789012ull, 7});
  auto decoded = transport::decode_request(frame);
  REQUIRE(decoded);
  CHECK(decoded->step == 123456789012ull);
  CHECK(decoded->rank == 7);
}

TEST_CASE("request rejects garbage", "[wire]") {
  CHECK_FALSE(transport::decode_request(""));
  CHECK_FALSE(transport::decode_request("\x01\x02\x03"));
  auto frame = transport::encode_request({1, 2});
  CHECK_FALSE(transport::decode_request(frame.substr(0, frame.size() / 2)));
  std::string junk(64, '\xff');
  CHECK_FALSE(transport::decode_request(junk));
}

TEST_CASE("error reply round trip", "[wire]") {
  auto frame = transport::encode_error(5, "rank 3 timed out");
  auto* reply = transport::verify_reply(frame.data(), frame.size());
  REQUIRE(reply);
  auto* failure = reply->body_as_ErrorReply();
  REQUIRE(failure);
  CHECK(failure->code() == 5);
  CHECK(failure->message()->str() == "rank 3 timed out");
}

TEST_CASE("batch layout of packed rows", "[wire]") {
  two_row_batch input;
  auto buffer = input.build();
  auto* reply = transport::verify_reply(buffer.data(), buffer.size());
  REQUIRE(reply);
  auto* batch = reply->body_as_Batch();
  REQUIRE(batch);
  CHECK(batch->step() == 12);
  CHECK(batch->rank() == 1);
  CHECK(batch->rows() == 2);
  CHECK(batch->sequence_length() == 8);

  const int32_t x = -100;
  CHECK(to_vector(batch->tokens()) ==
        std::vector<int32_t>{10, 11, 99, 20, 21, 22, 23, 24,
                             25, 99, 99, 99, 99, 99, 99, 99});
  CHECK(to_vector(batch->labels()) ==
        std::vector<int32_t>{11, 99, x, 21, 22, 23, 24, 25,
                             99, x, x, x, x, x, x, x});
  CHECK(to_vector(batch->loss_mask()) ==
        std::vector<uint8_t>{1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0});
  CHECK(to_vector(batch->position_ids()) ==
        std::vector<int32_t>{0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 0, 0, 0, 0, 0, 0});
  CHECK(to_vector(batch->cu_seqlens()) == std::vector<int32_t>{0, 3, 8, 0, 2});
  CHECK(to_vector(batch->row_splits()) == std::vector<uint32_t>{0, 3, 5});

  auto* counters = batch->counters();
  CHECK(counters->tokens() == 10);
  CHECK(counters->padding() == 6);
  CHECK(counters->documents_started() == 2);
  CHECK(counters->documents_split() == 2);

  REQUIRE(batch->documents()->size() == 3);
  auto* second = batch->documents()->Get(2);
  CHECK(second->key()->str() == "b");
  CHECK(second->source() == 1);
  CHECK(second->row() == 1);
  CHECK(second->row_offset() == 0);
  CHECK(second->document_offset() == 5);
  CHECK(second->document_tokens() == 7);
  CHECK(batch->source_names()->Get(1)->str() == "books");
}

TEST_CASE("batch build is byte identical", "[wire]") {
  two_row_batch input;
  auto first = input.build();
  auto second = input.build();
  REQUIRE(first.size() == second.size());
  CHECK(std::equal(first.data(), first.data() + first.size(), second.data()));
}

TEST_CASE("batch digest follows content", "[wire]") {
  two_row_batch input;
  auto buffer = input.build();
  auto* batch = transport::verify_reply(buffer.data(), buffer.size())->body_as_Batch();
  auto digest = transport::batch_digest(*batch);
  CHECK(digest.size() == 64);

  input.payloads[1][2] = 77;
  auto changed = input.build();
  auto* other = transport::verify_reply(changed.data(), changed.size())->body_as_Batch();
  CHECK(transport::batch_digest(*other) != digest);
}

TEST_CASE("content digest leaves out keys", "[wire]") {
  two_row_batch input;
  auto buffer = input.build();
  auto* batch = transport::verify_reply(buffer.data(), buffer.size())->body_as_Batch();
  auto content = transport::batch_content_digest(*batch);
  CHECK(content.size() == 64);
  CHECK(content != transport::batch_digest(*batch));

  input.plan.rows[0][0].key = "other:7";
  auto rekeyed = input.build();
  auto* renamed = transport::verify_reply(rekeyed.data(), rekeyed.size())->body_as_Batch();
  CHECK(transport::batch_content_digest(*renamed) == content);
  CHECK(transport::batch_digest(*renamed) != transport::batch_digest(*batch));

  input.payloads[0][1] = 12;
  auto changed = input.build();
  auto* other = transport::verify_reply(changed.data(), changed.size())->body_as_Batch();
  CHECK(transport::batch_content_digest(*other) != content);
}

TEST_CASE("reply verifier rejects corrupt frames", "[wire]") {
  two_row_batch input;
  auto buffer = input.build();
  std::string bytes(reinterpret_cast<const char*>(buffer.data()), buffer.size());

  // Every truncation must fail verification rather than read past the end.
  for (size_t cut = 0; cut < bytes.size(); cut += 7)
    CHECK(transport::verify_reply(bytes.data(), cut) == nullptr);

  // The root offset pointing outside the buffer.
  std::string bad_root = bytes;
  bad_root[0] = '\xff';
  bad_root[1] = '\xff';
  CHECK(transport::verify_reply(bad_root.data(), bad_root.size()) == nullptr);
}

TEST_CASE("batch layout check accepts built batches", "[wire]") {
  two_row_batch input;
  auto buffer = input.build();
  auto* reply = transport::verify_reply(buffer.data(), buffer.size());
  REQUIRE(reply != nullptr);
  CHECK(transport::check_batch_layout(*reply->body_as_Batch()).empty());
}

TEST_CASE("batch layout check rejects inconsistent shapes", "[wire]") {
  // Each case builds a Batch that passes the FlatBuffers verifier but
  // disagrees with its own shape: 2 rows of 4 positions.
  struct shape_case {
    const char* name;
    std::vector<int32_t> tokens;
    std::vector<uint32_t> row_splits;
    std::vector<int32_t> cu_seqlens;
    const char* expected;
  };
  const std::vector<int32_t> eight(8, 1);
  const std::vector<shape_case> cases = {
      {"short tokens", {1, 2, 3}, {0, 2, 4}, {0, 4, 0, 2},
       "tokens has 3 values, expected rows * row_length = 8"},
      {"missing row split", eight, {0, 2}, {0, 4, 0, 2},
       "row_splits has 2 values, expected rows + 1 = 3"},
      {"splits past cu_seqlens", eight, {0, 2, 9}, {0, 4, 0, 2},
       "row_splits must run from 0 to the 4 entries of cu_seqlens"},
      {"decreasing splits", eight, {0, 5, 4}, {0, 4, 0, 2},
       "row_splits decreases or passes the end of cu_seqlens at row 0"},
      {"offset past row", eight, {0, 2, 4}, {0, 5, 0, 2},
       "cu_seqlens of row 0 decreases or leaves 0..4"},
      {"decreasing offsets", eight, {0, 2, 4}, {0, 4, 3, 2},
       "cu_seqlens of row 1 decreases or leaves 0..4"},
  };
  for (const auto& test : cases) {
    INFO(test.name);
    flatbuffers::FlatBufferBuilder builder;
    auto tokens = builder.CreateVector(test.tokens);
    auto others = builder.CreateVector(eight);
    auto mask = builder.CreateVector(std::vector<uint8_t>(8, 1));
    auto splits = builder.CreateVector(test.row_splits);
    auto boundaries = builder.CreateVector(test.cu_seqlens);
    wire::BatchBuilder batch(builder);
    batch.add_rows(2);
    batch.add_row_length(4);
    batch.add_sequence_length(4);
    batch.add_tokens(tokens);
    batch.add_labels(others);
    batch.add_position_ids(others);
    batch.add_loss_mask(mask);
    batch.add_row_splits(splits);
    batch.add_cu_seqlens(boundaries);
    auto body = batch.Finish();
    builder.Finish(
        wire::CreateReply(builder, wire::ReplyBody::Batch, body.Union()));
    auto* reply = transport::verify_reply(builder.GetBufferPointer(),
                                          builder.GetSize());
    REQUIRE(reply != nullptr);
    CHECK(transport::check_batch_layout(*reply->body_as_Batch()) ==
          test.expected);
  }
}
