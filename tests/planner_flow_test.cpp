// The planner actor's message flows, run on CAF's deterministic test
// scheduler: nodes join, pools and constructors are spawned, plans stay
// within the plan window, served steps release payloads, and a lost
// loader node's pools restart elsewhere from the right stream position.
// Nodes, pools and constructors are scripted test actors.

#include <catch2/catch.hpp>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include <map>
#include <memory>
#include <vector>

#include "actors/messages.hpp"
#include "actors/planner_actor.hpp"

using namespace overlord;
using namespace overlord::actors;

namespace {

// Everything the scripted actors saw, for the assertions.
struct recorder {
  std::vector<std::pair<uint32_t, stream_position>> pool_starts;
  std::vector<uint32_t> rank_starts;
  std::vector<bool> rank_holds;  // hold_first_batch of each rank start
  std::map<uint32_t, std::vector<uint64_t>> plans;  // rank -> steps
  std::map<uint32_t, std::vector<uint64_t>> releases;  // source -> steps
  std::map<uint32_t, caf::actor> constructors;         // rank -> actor
  std::map<uint32_t, std::vector<int32_t>> resizes;    // source -> sizes
  std::map<uint32_t, uint64_t> latency_us;             // reported per source
  // Documents each source has ready in all. A source without an entry has
  // as many as requested, and requests beyond the limit stay unanswered,
  // like those to a starved pool.
  std::map<uint32_t, uint64_t> available;
  std::vector<caf::response_promise> unanswered;
  int joined = 0;
};

// Announces documents of 100 tokens each, continuing the sequence from
// the position it was started at.
caf::behavior fake_pool(caf::event_based_actor* self, uint32_t source,
                        stream_position start, std::shared_ptr<recorder> rec) {
  auto next = std::make_shared<uint64_t>(start.announce_from);
  return {
      [=](announce_atom, uint32_t count) {
        auto promise = self->make_response_promise();
        auto limit = rec->available.find(source);
        if (limit != rec->available.end()) {
          count = static_cast<uint32_t>(
              std::min<uint64_t>(count, limit->second));
          limit->second -= count;
        }
        if (count == 0) {
          rec->unanswered.push_back(promise);
          return promise;
        }
        std::vector<planner::document_meta> docs;
        for (uint32_t i = 0; i < count; ++i) {
          planner::document_meta meta;
          meta.source = source;
          meta.sequence = (*next)++;
          meta.tokens = 100;
          meta.key = "doc-" + std::to_string(meta.sequence);
          meta.shard_position = static_cast<uint32_t>(meta.sequence / 10);
          meta.record = static_cast<uint32_t>(meta.sequence % 10);
          docs.push_back(meta);
        }
        promise.deliver(std::move(docs));
        return promise;
      },
      [=](release_atom, uint64_t step, uint64_t) {
        rec->releases[source].push_back(step);
      },
      [=](stats_atom) {
        return counters{{"latency_us", rec->latency_us[source]}};
      },
      [=](resize_atom, int32_t workers) {
        rec->resizes[source].push_back(workers);
      },
  };
}

// Records plans, and reports a served step to the planner when the test
// says so (the planner accepts served steps only from the rank's
// constructor).
caf::behavior fake_constructor(caf::event_based_actor* self, uint32_t rank,
                               caf::actor planner,
                               std::shared_ptr<recorder> rec) {
  return {
      [=](plan_atom, const planner::rank_plan& plan) {
        rec->plans[rank].push_back(plan.step);
      },
      [=](served_atom, uint64_t step) {
        self->send(planner, served_atom::value, rank, step);
      },
      [=](pool_update_atom, uint32_t, caf::actor, const std::string&,
          const std::string&) {},
  };
}

caf::behavior fake_node(caf::event_based_actor* self, caf::actor planner,
                        node_info info, std::shared_ptr<recorder> rec) {
  self->request(planner, caf::infinite, join_atom::value, info)
      .then([=](planner::job_config&) { rec->joined++; });
  return {
      [=](spawn_pool_atom, uint32_t source, stream_position start)
          -> caf::result<caf::actor, std::string> {
        rec->pool_starts.emplace_back(source, start);
        return {self->spawn<caf::linked>(fake_pool, source, start, rec),
                std::string()};
      },
      [=](spawn_rank_atom, uint32_t rank, std::vector<caf::actor>,
          std::vector<std::string>, std::vector<std::string>, int32_t,
          bool shadow,
          bool hold_first_batch) -> caf::result<caf::actor, std::string> {
        if (shadow)
          return caf::make_error(caf::sec::runtime_error, "no shadows here");
        rec->rank_starts.push_back(rank);
        rec->rank_holds.push_back(hold_first_batch);
        auto constructor =
            self->spawn<caf::linked>(fake_constructor, rank, planner, rec);
        rec->constructors[rank] = constructor;
        return {constructor, "tcp://test:" + std::to_string(rank)};
      },
      [=](heartbeat_atom) {},
      [=](leave_atom) {},
  };
}

planner::job_config flow_config() {
  planner::job_config config;
  config.seed = 3;
  config.sequence_length = 256;
  config.rows_per_rank = 2;
  config.ranks = 2;
  config.plan_ahead = 3;
  config.loader_nodes = 1;
  config.constructor_nodes = 1;
  for (const char* name : {"a", "b"}) {
    planner::source_config source;
    source.name = name;
    source.weight = 1;
    config.sources.push_back(source);
  }
  return config;
}

// Returns flow_config() with autoscaling every `interval_ms`, headroom 1.5,
// a budget of 8 cores and up to 8 workers per source.
planner::job_config autoscaled_config(int interval_ms) {
  auto job = flow_config();
  job.autoscale.enabled = true;
  job.autoscale.interval_ms = interval_ms;
  job.autoscale.headroom = 1.5;
  job.autoscale.cpu_budget = 8;
  for (auto& source : job.sources)
    source.max_workers = 8;
  return job;
}

struct flow_fixture {
  caf::actor_system_config config;
  std::unique_ptr<caf::actor_system> system;
  caf::scheduler::test_coordinator* scheduler = nullptr;
  std::shared_ptr<recorder> rec = std::make_shared<recorder>();
  caf::actor planner;

  explicit flow_fixture(planner::job_config job = flow_config()) {
    config.set("scheduler.policy", caf::atom("testing"));
    add_message_types(config);
    system = std::make_unique<caf::actor_system>(config);
    scheduler =
        &dynamic_cast<caf::scheduler::test_coordinator&>(system->scheduler());
    planner = spawn_planner(*system, planner_setup{job, 50256, {}});
    scheduler->run();
  }

  ~flow_fixture() {
    caf::anon_send_exit(planner, caf::exit_reason::user_shutdown);
    scheduler->run();
  }

  caf::actor join(const std::string& id, const std::string& role) {
    node_info info;
    info.id = id;
    info.role = role;
    info.address = "local";
    auto node = system->spawn(fake_node, planner, info, rec);
    scheduler->run();
    return node;
  }

  // Moves the clock on by `step`, `times` times, running what falls due
  // after each move.
  void advance(std::chrono::milliseconds step, int times = 1) {
    for (int i = 0; i < times; ++i) {
      scheduler->advance_time(step);
      scheduler->run();
    }
  }

  void served(uint32_t rank, uint64_t step) {
    caf::anon_send(rec->constructors.at(rank), served_atom::value, step);
    scheduler->run();
  }
};

}  // namespace

TEST_CASE("planner waits for loader and constructor", "[planner_flow]") {
  flow_fixture f;
  auto loader = f.join("loader-1", "loader");
  CHECK(f.rec->joined == 1);
  CHECK(f.rec->pool_starts.empty());

  auto constructor = f.join("constructor-1", "constructor");
  CHECK(f.rec->joined == 2);
  REQUIRE(f.rec->pool_starts.size() == 2);
  CHECK(f.rec->pool_starts[0].first == 0);
  CHECK(f.rec->pool_starts[1].first == 1);
  CHECK(f.rec->pool_starts[0].second.first_sequence == 0);
  CHECK(f.rec->rank_starts == std::vector<uint32_t>{0, 1});
}

TEST_CASE("planner keeps to the plan window", "[planner_flow]") {
  flow_fixture f;
  f.join("loader-1", "loader");
  f.join("constructor-1", "constructor");
  // plan_ahead is 3: steps 0, 1 and 2 for each rank, nothing more.
  CHECK(f.rec->plans[0] == std::vector<uint64_t>{0, 1, 2});
  CHECK(f.rec->plans[1] == std::vector<uint64_t>{0, 1, 2});

  // One rank moving on is not enough: the slowest rank sets the window.
  f.served(0, 0);
  CHECK(f.rec->plans[0].size() == 3);
  CHECK(f.rec->releases.empty());

  f.served(1, 0);
  CHECK(f.rec->plans[0] == std::vector<uint64_t>{0, 1, 2, 3});
  CHECK(f.rec->plans[1] == std::vector<uint64_t>{0, 1, 2, 3});
  // Both pools hear that step 0 is done everywhere.
  CHECK(f.rec->releases[0] == std::vector<uint64_t>{0});
  CHECK(f.rec->releases[1] == std::vector<uint64_t>{0});
}

TEST_CASE("planner moves pools of a lost loader", "[planner_flow]") {
  flow_fixture f;
  auto first = f.join("loader-1", "loader");
  f.join("constructor-1", "constructor");
  auto spare = f.join("loader-2", "loader");
  REQUIRE(f.rec->pool_starts.size() == 2);
  f.served(0, 0);
  f.served(1, 0);

  caf::anon_send_exit(first, caf::exit_reason::kill);
  f.scheduler->run();

  // Both sources restart on the spare, where the stream is still needed:
  // at the oldest document of a step not yet served, and announcing only
  // what the planner has not seen.
  REQUIRE(f.rec->pool_starts.size() == 4);
  for (size_t i = 2; i < 4; ++i) {
    const auto& start = f.rec->pool_starts[i].second;
    CHECK(start.first_sequence > 0);
    CHECK(start.announce_from >= start.first_sequence);
    CHECK(start.shard_position == start.first_sequence / 10);
    CHECK(start.record == start.first_sequence % 10);
  }

  // Planning goes on with the new pools.
  f.served(0, 1);
  f.served(1, 1);
  CHECK(f.rec->plans[0].back() == 4);
}

TEST_CASE("replacement constructors serve at once", "[planner_flow]") {
  // Each rank's first primary may hold its first batch back
  // (startup_prefetch_steps). Its trainers are mid-run when a lost node's
  // ranks start again elsewhere, so those constructors must not.
  flow_fixture f;
  f.join("loader-1", "loader");
  auto first = f.join("constructor-1", "constructor");
  f.join("constructor-2", "constructor");
  REQUIRE(f.rec->rank_starts.size() == 2);
  CHECK(f.rec->rank_holds == std::vector<bool>{true, true});
  f.served(0, 0);
  f.served(1, 0);

  caf::anon_send_exit(first, caf::exit_reason::kill);
  f.scheduler->run();
  REQUIRE(f.rec->rank_starts.size() == 4);
  CHECK(f.rec->rank_holds[2] == false);
  CHECK(f.rec->rank_holds[3] == false);
}

TEST_CASE("planner rejects duplicate node ids", "[planner_flow]") {
  flow_fixture f;
  f.join("loader-1", "loader");
  f.join("loader-1", "loader");
  CHECK(f.rec->joined == 1);
}

TEST_CASE("planner ignores joins without sender", "[planner_flow]") {
  flow_fixture f;
  // A remote join whose node link is not set up yet arrives without a
  // sender. It must not register the node or stop the planner.
  node_info info;
  info.id = "loader-1";
  info.role = "loader";
  info.address = "local";
  caf::anon_send(f.planner, join_atom::value, info);
  f.scheduler->run();
  CHECK(f.rec->joined == 0);
  // The node's next join registers it.
  f.join("loader-1", "loader");
  CHECK(f.rec->joined == 1);
}

TEST_CASE("planner ignores served from strangers", "[planner_flow]") {
  flow_fixture f;
  f.join("loader-1", "loader");
  f.join("constructor-1", "constructor");
  // Not the rank's constructor: the window must not move.
  caf::anon_send(f.planner, served_atom::value, uint32_t{0}, uint64_t{5});
  caf::anon_send(f.planner, served_atom::value, uint32_t{1}, uint64_t{5});
  f.scheduler->run();
  CHECK(f.rec->plans[0] == std::vector<uint64_t>{0, 1, 2});
  CHECK(f.rec->releases.empty());
}

TEST_CASE("planner resizes pools from observed latency", "[planner_flow]") {
  // 2 ranks x 2 rows x 256 tokens of 100-token documents, half from each
  // source: 5.12 documents per source per step.
  flow_fixture f(autoscaled_config(500));
  f.join("loader-1", "loader");
  f.join("constructor-1", "constructor");
  f.rec->latency_us[0] = 1000;    // 1 ms per document
  f.rec->latency_us[1] = 200000;  // 200 ms per document

  // Trainers take a step every 250 ms: four a second.
  uint64_t step = 0;
  for (int tick = 0; tick < 4; ++tick) {
    f.served(0, step);
    f.served(1, step);
    ++step;
    f.scheduler->advance_time(std::chrono::milliseconds(250));
    f.scheduler->run();
    f.served(0, step);
    f.served(1, step);
    ++step;
    f.scheduler->advance_time(std::chrono::milliseconds(250));
    f.scheduler->run();
  }
  // Source b needs 4 steps/s x 5.12 x 0.2 s x 1.5 = 6.14 workers; source
  // a needs 0.03 and keeps its one.
  CHECK(f.rec->resizes[0].empty());
  REQUIRE(f.rec->resizes[1].size() == 1);
  CHECK(f.rec->resizes[1][0] == 7);
}

TEST_CASE("planner grows a starved pool before any step is served",
          "[planner_flow]") {
  // Source b has 3 documents ready, and step 0 needs about 5: planning
  // waits from the start and no trainer receives a step.
  flow_fixture f(autoscaled_config(200));
  f.rec->available[1] = 3;
  f.rec->latency_us[0] = 1000;
  f.rec->latency_us[1] = 0;  // no read finished yet
  f.join("loader-1", "loader");
  f.join("constructor-1", "constructor");
  CHECK(f.rec->plans[0].empty());

  // One interval blocked, but b's service time is unknown: no decision.
  f.scheduler->advance_time(std::chrono::milliseconds(200));
  f.scheduler->run();
  CHECK(f.rec->resizes[1].empty());

  // b's first read takes 200 ms per document. The pool reports it in
  // reply to the next decision's stats request, and the planner grows b
  // on that reply rather than one interval later. b supplies 5 / 5.12
  // steps/s, and planning is blocked, so the demand is taken as 10x that.
  // b then needs 15 workers, scaled into the budget of 8 cores and capped
  // at max_workers.
  f.rec->latency_us[1] = 200000;
  f.scheduler->advance_time(std::chrono::milliseconds(200));
  f.scheduler->run();
  REQUIRE(f.rec->resizes[1] == std::vector<int32_t>{8});
  CHECK(f.rec->resizes[0].empty());
}

namespace {

// Leaves source b 3 documents of the about 5 that step 0 needs, gives both
// sources a service time, and joins the nodes at 150 ms.
void join_starved_at_150_ms(flow_fixture& f) {
  f.rec->available[1] = 3;
  f.rec->latency_us[0] = 1000;
  f.rec->latency_us[1] = 200000;
  f.advance(std::chrono::milliseconds(150));
  f.join("loader-1", "loader");
  f.join("constructor-1", "constructor");
}

}  // namespace

TEST_CASE("starved pool grows after one interval",
          "[planner_flow]") {
  // The decisions run every 200 ms from the start, and work is assigned
  // at 150 ms. b's first service time arrives with the stats of the
  // decision at 200 ms, when planning has waited only 50 ms.
  flow_fixture f(autoscaled_config(200));
  join_starved_at_150_ms(f);
  f.advance(std::chrono::milliseconds(50));
  CHECK(f.rec->resizes[1].empty());

  // One interval of waiting ends at 350 ms, before the next decision at
  // 400 ms: b grows then.
  f.advance(std::chrono::milliseconds(100));
  CHECK(f.rec->resizes[1].empty());
  f.advance(std::chrono::milliseconds(10), 6);
  REQUIRE(f.rec->resizes[1] == std::vector<int32_t>{8});
  CHECK(f.rec->resizes[0].empty());
}

TEST_CASE("supply resizes come one interval apart", "[planner_flow]") {
  // As above, with room for b to keep growing: each decision from the
  // supply multiplies b's workers while planning still waits.
  auto job = autoscaled_config(200);
  job.autoscale.cpu_budget = 1000;
  for (auto& source : job.sources)
    source.max_workers = 1000;
  flow_fixture f(job);
  join_starved_at_150_ms(f);
  f.advance(std::chrono::milliseconds(10), 21);
  REQUIRE(f.rec->resizes[1].size() == 1);

  // The periodic decision at 400 ms comes 50 ms after that resize, so it
  // leaves b alone. The first one at least an interval later is at 600 ms.
  f.advance(std::chrono::milliseconds(10), 23);
  CHECK(f.rec->resizes[1].size() == 1);
  f.advance(std::chrono::milliseconds(10));
  CHECK(f.rec->resizes[1].size() == 2);
}

TEST_CASE("planner keeps pool sizes while planning keeps up",
          "[planner_flow]") {
  flow_fixture f(autoscaled_config(100));
  f.rec->latency_us[0] = 1000;
  f.rec->latency_us[1] = 200000;
  f.join("loader-1", "loader");
  f.join("constructor-1", "constructor");
  // The plan window is full and no step is served: nothing is measured,
  // and planning never waits for a source.
  f.advance(std::chrono::milliseconds(100), 10);
  CHECK(f.rec->plans[0].size() == 3);
  CHECK(f.rec->resizes[0].empty());
  CHECK(f.rec->resizes[1].empty());
}

TEST_CASE("planner ignores a late short wait before any rate",
          "[planner_flow]") {
  flow_fixture f(autoscaled_config(100));
  // Enough of b for the three steps of the plan window, not a fourth.
  f.rec->available[1] = 16;
  f.rec->latency_us[0] = 1000;
  f.rec->latency_us[1] = 200000;
  f.join("loader-1", "loader");
  f.join("constructor-1", "constructor");
  REQUIRE(f.rec->plans[0] == std::vector<uint64_t>{0, 1, 2});
  f.advance(std::chrono::milliseconds(100), 10);

  // Step 3 waits for b from 1 s on. 150 ms of waiting is more than one
  // interval but a small share of the time since work was assigned, so
  // the planner does not take the pools' supply as the demand.
  f.served(0, 0);
  f.served(1, 0);
  REQUIRE(f.rec->plans[0].size() == 3);
  f.scheduler->advance_time(std::chrono::milliseconds(150));
  f.scheduler->run();
  CHECK(f.rec->resizes[1].empty());
}
