#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint_generated.h"
#include "checkpoint/records.hpp"
#include "checkpoint/restore.hpp"
#include "checkpoint/store.hpp"
#include "common/error.hpp"
#include "planner/step_planner.hpp"
#include "tests/test_files.hpp"

using namespace overlord;
using namespace overlord::checkpoint;
using overlord::testing::temp_dir;

namespace {

snapshot_record sample_snapshot() {
  snapshot_record record;
  record.step = 120;
  record.settings = {{"seed", "7"}, {"sequence_length", "512"}};
  record.topology = "ranks=2 rows_per_rank=4";
  record.weights = {0.5, 0.3, 0.2};
  record.total_drawn = 12345;
  source_cursor cursor;
  cursor.name = "mail";
  cursor.first_sequence = 40;
  cursor.epoch = 1;
  cursor.shard_position = 3;
  cursor.record = 17;
  cursor.announce_from = 42;
  cursor.drawn = 6000;
  record.sources = {cursor};
  planner::piece p;
  p.source = 0;
  p.sequence = 40;
  p.key = "mail-0003.jsonl:18";
  p.offset = 512;
  p.length = 100;
  p.document_tokens = 612;
  record.carried = {p};
  return record;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

}  // namespace

TEST_CASE("snapshot round trip same bytes", "[checkpoint]") {
  auto bytes = encode_snapshot(sample_snapshot());
  auto decoded = decode_snapshot(bytes, "memory");
  CHECK(decoded.step == 120);
  CHECK(decoded.settings.size() == 2);
  CHECK(decoded.sources.at(0).record == 17);
  CHECK(decoded.carried.at(0).key == "mail-0003.jsonl:18");
  CHECK(encode_snapshot(decoded) == bytes);
}

TEST_CASE("snapshot keeps NUL bytes in strings", "[checkpoint]") {
  // A YAML "\0" escape can put a NUL byte into text_field, and so into a
  // stream setting that a resume compares.
  auto record = sample_snapshot();
  const std::string with_nul("te\0xt", 5);
  record.settings.emplace_back("sources[0].text_field", with_nul);
  record.topology = with_nul;
  record.sources.at(0).name = with_nul;
  record.carried.at(0).key = with_nul;
  auto decoded = decode_snapshot(encode_snapshot(record), "memory");
  CHECK(decoded.settings.back().second == with_nul);
  CHECK(decoded.topology == with_nul);
  CHECK(decoded.sources.at(0).name == with_nul);
  CHECK(decoded.carried.at(0).key == with_nul);
}

TEST_CASE("delta round trip", "[checkpoint]") {
  delta_record step;
  step.step = step_delta{7, {100, 0, 3.5}, 2};
  auto decoded = decode_delta(encode_delta(step), "memory");
  REQUIRE(decoded.step);
  CHECK(decoded.step->drawn == std::vector<double>{100, 0, 3.5});
  CHECK(decoded.step->carried_pieces == 2);

  delta_record weights;
  weights.weights = weight_change{9, {1, 2}};
  auto change = decode_delta(encode_delta(weights), "memory");
  REQUIRE(change.weights);
  CHECK(change.weights->from_step == 9);
  // A change without marks sets every source, as older logs did.
  CHECK(change.weights->named.empty());

  weights.weights = weight_change{11, {1, 2}, {false, true}};
  auto marked = decode_delta(encode_delta(weights), "memory");
  REQUIRE(marked.weights);
  CHECK(marked.weights->named == std::vector<bool>{false, true});
}

namespace {

// Returns a snapshot of format `version` written the way version 1 was:
// operator weights {3} from step 4 and no per-source steps.
std::string snapshot_of_version(uint32_t version) {
  flatbuffers::FlatBufferBuilder builder;
  auto weights = builder.CreateVector(std::vector<double>{3});
  builder.Finish(wire::CreateSnapshot(builder, version, 7, 0, 0, weights, 0,
                                      0, 0, 4));
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                     builder.GetSize());
}

}  // namespace

TEST_CASE("snapshot reads older format versions", "[checkpoint]") {
  auto decoded = decode_snapshot(snapshot_of_version(1), "memory");
  CHECK(decoded.step == 7);
  CHECK(decoded.weights == std::vector<double>{3});
  CHECK(decoded.weights_from_step == 4);
  CHECK(decoded.weights_from_steps.empty());
  CHECK_THROWS_WITH(decode_snapshot(snapshot_of_version(3), "memory"),
                    Catch::Contains("snapshot format version 3 is not supported"));
}

TEST_CASE("snapshot keeps per-source weight steps", "[checkpoint]") {
  auto record = sample_snapshot();
  record.weights = {3, 0};
  record.weights_from_steps = {40, UINT64_MAX};
  auto decoded = decode_snapshot(encode_snapshot(record), "memory");
  CHECK(decoded.weights == std::vector<double>{3, 0});
  CHECK(decoded.weights_from_steps == std::vector<uint64_t>{40, UINT64_MAX});
}

TEST_CASE("store keeps newest snapshots", "[checkpoint]") {
  temp_dir dir("ckpt-keep");
  checkpoint_store store(dir.path().string());
  for (uint64_t step : {0, 10, 20, 30, 40})
    store.write_snapshot(step, "payload-" + std::to_string(step), 3);
  CHECK_FALSE(store.load_snapshot(15));  // 0 and 10 were removed
  auto newest = store.load_snapshot(1000);
  REQUIRE(newest);
  CHECK(newest->step == 40);
  CHECK(newest->payload == "payload-40");
  CHECK(store.load_snapshot(29)->step == 20);
}

TEST_CASE("store detects corrupt snapshot", "[checkpoint]") {
  temp_dir dir("ckpt-corrupt");
  checkpoint_store store(dir.path().string());
  store.write_snapshot(5, encode_snapshot(sample_snapshot()));
  auto path = store.load_snapshot(5)->path;
  auto bytes = read_bytes(path);
  bytes[bytes.size() / 2] ^= 0x40;
  write_bytes(path, bytes);
  CHECK_THROWS_WITH(store.load_snapshot(5),
                    Catch::Contains(path) && Catch::Contains("checksum"));

  write_bytes(path, bytes.substr(0, bytes.size() - 3));
  CHECK_THROWS_WITH(store.load_snapshot(5),
                    Catch::Contains(path) && Catch::Contains("truncated"));
}

TEST_CASE("store ignores torn delta tail", "[checkpoint]") {
  temp_dir dir("ckpt-torn");
  {
    checkpoint_store store(dir.path().string());
    store.append_delta("first");
    store.append_delta("second");
  }
  auto log = (dir.path() / "deltas.log").string();
  auto bytes = read_bytes(log);
  // A crash in the middle of the third append.
  write_bytes(log, bytes + frame_record("third").substr(0, 9));
  checkpoint_store store(dir.path().string());
  auto loaded = store.load_deltas();
  CHECK(loaded.torn_tail);
  CHECK(loaded.payloads == std::vector<std::string>{"first", "second"});

  // Damage before the end is corruption, not a torn tail.
  bytes[14] ^= 0x01;
  write_bytes(log, bytes);
  CHECK_THROWS_WITH(store.load_deltas(), Catch::Contains("checksum"));
}

TEST_CASE("restore merges weight changes of one step", "[checkpoint]") {
  // Two set-weights commands between two planned steps take effect at the
  // same step, each for the sources it names.
  temp_dir dir("ckpt-merge");
  checkpoint_store store(dir.path().string());
  planner::job_config config;
  for (const char* name : {"a", "b"}) {
    planner::source_config source;
    source.name = name;
    config.sources.push_back(source);
  }
  snapshot_record snapshot;
  snapshot.step = 0;
  snapshot.settings = stream_settings(config);
  store.write_snapshot(0, encode_snapshot(snapshot));
  for (const auto& change : {weight_change{5, {2, 1}, {true, false}},
                             weight_change{5, {2, 3}, {false, true}}}) {
    delta_record record;
    record.weights = change;
    store.append_delta(encode_delta(record));
  }

  auto plan = prepare_restore(store, config, 10);
  REQUIRE(plan.weight_changes.count(5) == 1);
  CHECK(plan.weight_changes.at(5).weights == std::vector<double>{2, 3});
  CHECK(plan.weight_changes.at(5).named == std::vector<bool>{true, true});
  // The rewritten log keeps the merged change.
  REQUIRE(plan.kept_records.size() == 1);
  auto rewritten = decode_delta(plan.kept_records[0], "memory");
  REQUIRE(rewritten.weights);
  CHECK(rewritten.weights->named == std::vector<bool>{true, true});
}

TEST_CASE("store is locked while open", "[checkpoint]") {
  temp_dir dir("ckpt-lock");
  {
    checkpoint_store first(dir.path().string());
    try {
      checkpoint_store second(dir.path().string());
      FAIL("a second store opened the same directory");
    } catch (const error& e) {
      CHECK(e.code() == errc::unavailable);
      CHECK_THAT(std::string(e.what()),
                 Catch::Contains("in use by another planner (pid " +
                                 std::to_string(::getpid()) + ")"));
    }
  }
  // Closing the first store releases the directory.
  CHECK_NOTHROW(checkpoint_store(dir.path().string()));
}

TEST_CASE("store removes stale temporary files", "[checkpoint]") {
  temp_dir dir("ckpt-tmp");
  dir.write("snapshot-00000000000000000010.ovck.tmp", "half written");
  checkpoint_store store(dir.path().string());
  CHECK_FALSE(std::filesystem::exists(
      dir.path() / "snapshot-00000000000000000010.ovck.tmp"));
  CHECK_FALSE(store.load_snapshot(100));
}

TEST_CASE("restore rejects changed stream settings", "[checkpoint]") {
  temp_dir dir("ckpt-settings");
  planner::job_config config;
  config.seed = 1;
  config.sequence_length = 512;
  config.ranks = 1;
  config.rows_per_rank = 2;
  planner::source_config source;
  source.name = "mail";
  source.shards = {"/data/a.jsonl", "/data/b.jsonl"};
  config.sources = {source};

  snapshot_record record;
  record.step = 10;
  record.settings = stream_settings(config);
  record.weights = {1};
  checkpoint_store store(dir.path().string());
  store.write_snapshot(10, encode_snapshot(record));

  // Same stream, same global rows split over other ranks: accepted.
  auto split = config;
  split.ranks = 2;
  split.rows_per_rank = 1;
  config.ranks = 1;
  config.rows_per_rank = 2;
  CHECK(prepare_restore(store, split, 12).snapshot.step == 10);

  auto longer = config;
  longer.sequence_length = 1024;
  CHECK_THROWS_WITH(prepare_restore(store, longer, 12),
                    Catch::Contains("sequence_length was 512") &&
                        Catch::Contains("is 1024 now"));

  auto moved = config;
  moved.sources[0].shards = {"/elsewhere/a.jsonl", "/elsewhere/b.jsonl"};
  CHECK(prepare_restore(store, moved, 12).snapshot.step == 10);

  auto other_files = config;
  other_files.sources[0].shards = {"/data/a.jsonl"};
  CHECK_THROWS_WITH(prepare_restore(store, other_files, 12),
                    Catch::Contains("sources[0] (" + config.sources[0].name +
                                    ").shards"));

  CHECK_THROWS_WITH(prepare_restore(store, config, 5),
                    Catch::Contains("no snapshot at or before step 5"));
}

TEST_CASE("step planner save restore continues", "[checkpoint]") {
  planner::job_config config;
  config.seed = 11;
  config.sequence_length = 256;
  config.rows_per_rank = 2;
  config.ranks = 2;
  for (const char* name : {"a", "b"}) {
    planner::source_config source;
    source.name = name;
    source.weight = name[0] == 'a' ? 3 : 1;
    config.sources.push_back(source);
  }
  auto feed = [](planner::step_planner& planner, uint32_t source,
                 uint64_t from, uint64_t count) {
    std::vector<planner::document_meta> docs;
    for (uint64_t s = from; s < from + count; ++s) {
      planner::document_meta meta;
      meta.source = source;
      meta.sequence = s;
      meta.tokens = static_cast<uint32_t>(40 + (s * 37 + source * 101) % 700);
      meta.key = std::to_string(source) + ":" + std::to_string(s);
      docs.push_back(meta);
    }
    planner.add_documents(source, docs);
  };

  planner::step_planner original(config);
  feed(original, 0, 0, 400);
  feed(original, 1, 0, 400);
  for (int i = 0; i < 10; ++i)
    REQUIRE(original.plan_next().plan);

  auto state = original.save();
  planner::step_planner resumed(config);
  resumed.restore(state);
  // The pools announce again from where nothing was drawn yet.
  feed(resumed, 0, state.next_unplanned[0], 400 - state.next_unplanned[0]);
  feed(resumed, 1, state.next_unplanned[1], 400 - state.next_unplanned[1]);

  for (int i = 0; i < 10; ++i) {
    auto a = original.plan_next();
    auto b = resumed.plan_next();
    REQUIRE(a.plan);
    REQUIRE(b.plan);
    CHECK(a.plan->step == b.plan->step);
    REQUIRE(a.plan->rows.size() == b.plan->rows.size());
    for (size_t r = 0; r < a.plan->rows.size(); ++r) {
      REQUIRE(a.plan->rows[r].size() == b.plan->rows[r].size());
      for (size_t k = 0; k < a.plan->rows[r].size(); ++k) {
        CHECK(a.plan->rows[r][k].key == b.plan->rows[r][k].key);
        CHECK(a.plan->rows[r][k].offset == b.plan->rows[r][k].offset);
      }
    }
  }
}

TEST_CASE("restore keeps last records before step", "[checkpoint]") {
  temp_dir dir("ckpt-rewrite");
  planner::job_config config;
  config.seed = 1;
  config.ranks = 1;
  config.rows_per_rank = 1;
  planner::source_config source;
  source.name = "a";
  config.sources = {source};

  snapshot_record record;
  record.step = 10;
  record.settings = stream_settings(config);
  record.weights = {1};
  checkpoint_store store(dir.path().string());
  store.write_snapshot(10, encode_snapshot(record));

  auto step = [](uint64_t n, double drawn) {
    delta_record r;
    r.step = step_delta{n, {drawn}, 0};
    return encode_delta(r);
  };
  auto weights = [](uint64_t from, double w) {
    delta_record r;
    r.weights = weight_change{from, {w}};
    return encode_delta(r);
  };
  // A first run logged steps 10..14 and a weight change from 13; a resume
  // at 12 logged steps 12..13 again with other amounts.
  for (auto payload : {step(10, 1), step(11, 1), step(12, 1), weights(13, 5),
                       step(13, 1), step(14, 1), step(12, 2), step(13, 2)})
    store.append_delta(payload);

  auto plan = prepare_restore(store, config, 14);
  CHECK(plan.step_deltas.at(12).drawn == std::vector<double>{2});
  CHECK(plan.step_deltas.at(13).drawn == std::vector<double>{2});
  CHECK(plan.step_deltas.count(14) == 0);
  CHECK(plan.weight_changes.at(13).weights == std::vector<double>{5});

  auto earlier = prepare_restore(store, config, 12);
  CHECK(earlier.dropped_weight_changes == 1);
  CHECK(earlier.weight_changes.empty());

  store.rewrite_deltas(earlier.kept_records);
  auto loaded = store.load_deltas();
  REQUIRE(loaded.payloads.size() == 2);  // steps 10 and 11
  CHECK(decode_delta(loaded.payloads[1], "log").step->step == 11);
  store.append_delta(step(12, 3));
  CHECK(store.load_deltas().payloads.size() == 3);
}
