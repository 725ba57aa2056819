// A real DataConstructor on CAF's threaded scheduler, fed plans by the test
// and documents by a scripted pool, and asked for batches over ZeroMQ like a
// trainer. It checks that startup_prefetch_steps keeps the first batch back
// until the lead is built, whichever of request and builds comes first.

#include <catch2/catch.hpp>

#include <caf/all.hpp>
#include <zmq.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "actors/constructor.hpp"
#include "actors/messages.hpp"
#include "client/client.hpp"
#include "common/error.hpp"
#include "transport/wire.hpp"

using namespace overlord;
using namespace overlord::actors;

namespace {

constexpr uint32_t document_tokens = 8;

// Returns the tokens of a whole document of `length` tokens for any fetch.
caf::behavior scripted_pool(caf::event_based_actor*) {
  return {
      [](fetch_atom, uint64_t, uint64_t sequence, uint32_t,
         uint32_t length) -> piece_payload {
        piece_payload payload;
        for (uint32_t i = 0; i < length; ++i)
          payload.tokens.push_back(static_cast<int32_t>(sequence * 100 + i));
        return payload;
      },
  };
}

planner::job_config constructor_config(int startup_prefetch_steps) {
  planner::job_config config;
  config.seed = 1;
  config.sequence_length = 16;
  config.rows_per_rank = 1;
  config.ranks = 1;
  config.bind = "127.0.0.1";
  config.plan_ahead = 4;
  config.startup_prefetch_steps = startup_prefetch_steps;
  planner::source_config source;
  source.name = "a";
  source.weight = 1;
  config.sources.push_back(source);
  return config;
}

// One row holding one whole document, whose sequence is the step.
planner::rank_plan plan_of(uint64_t step) {
  planner::piece piece;
  piece.source = 0;
  piece.sequence = step;
  piece.key = "doc-" + std::to_string(step);
  piece.length = document_tokens;
  piece.document_tokens = document_tokens;
  planner::rank_plan plan;
  plan.step = step;
  plan.rank = 0;
  plan.sequence_length = 16;
  plan.rows.push_back({piece});
  return plan;
}

struct constructor_fixture {
  caf::actor_system_config config;
  std::unique_ptr<caf::actor_system> system;
  std::shared_ptr<zmq::context_t> context = std::make_shared<zmq::context_t>();
  caf::actor constructor;
  std::string endpoint;
  std::unique_ptr<zmq::socket_t> trainer;

  constructor_fixture(int startup_prefetch_steps, bool hold_first_batch) {
    add_message_types(config);
    system = std::make_unique<caf::actor_system>(config);
    constructor_setup setup;
    setup.config = constructor_config(startup_prefetch_steps);
    setup.rank = 0;
    setup.pools = {system->spawn(scripted_pool)};
    setup.payload_endpoints = {""};
    setup.node_id = "constructor-test";
    setup.hold_first_batch = hold_first_batch;
    setup.zmq_context = context;
    // Ports below Linux's default range for outgoing connections
    // (32768 to 60999). A port that is taken is skipped.
    std::mt19937 random(std::random_device{}());
    for (int attempt = 0; attempt < 20 && !constructor; ++attempt) {
      setup.config.base_port = 20000 + static_cast<int>(random() % 10000);
      try {
        constructor = spawn_constructor(*system, setup, &endpoint);
      } catch (const error&) {
      }
    }
    REQUIRE(constructor);
    trainer = std::make_unique<zmq::socket_t>(*context, zmq::socket_type::dealer);
    trainer->set(zmq::sockopt::linger, 0);
    trainer->connect(endpoint);
  }

  ~constructor_fixture() {
    trainer.reset();
    caf::anon_send_exit(constructor, caf::exit_reason::user_shutdown);
    system->await_all_actors_done();
  }

  void request(uint64_t step) {
    auto frame = transport::encode_request({step, 0, 0, 0});
    trainer->send(zmq::buffer(frame), zmq::send_flags::none);
  }

  void send_plan(uint64_t step) {
    caf::anon_send(constructor, plan_atom::value, plan_of(step));
  }

  // Returns the constructor's counter `name`.
  uint64_t stat(const std::string& name) {
    caf::scoped_actor self{*system};
    uint64_t value = 0;
    self->request(constructor, std::chrono::seconds(5), stats_atom::value)
        .receive([&](counters& stats) { value = stats[name]; },
                 [&](caf::error& err) {
                   FAIL("stats request failed: " << system->render(err));
                 });
    return value;
  }

  // Waits up to 5 s for counter `name` to reach `value`.
  bool wait_for_stat(const std::string& name, uint64_t value) {
    for (int i = 0; i < 500; ++i) {
      if (stat(name) == value)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // Returns the step of the next batch within `wait`, or nothing.
  std::optional<uint64_t> receive(std::chrono::milliseconds wait) {
    zmq::pollitem_t item{static_cast<void*>(*trainer), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, wait) == 0)
      return std::nullopt;
    zmq::message_t message;
    (void)trainer->recv(message);
    client::received_batch batch(std::move(message));
    return batch.batch().step();
  }
};

constexpr std::chrono::milliseconds quiet{300};
constexpr std::chrono::milliseconds patience{5000};

}  // namespace

TEST_CASE("constructor holds request until lead built", "[constructor]") {
  constructor_fixture f(3, true);
  f.request(0);
  f.request(1);
  REQUIRE(f.wait_for_stat("waiting_requests", 2));

  // Steps 0 and 1 are built, but the lead is 3 steps: nothing goes out.
  f.send_plan(0);
  f.send_plan(1);
  REQUIRE(f.wait_for_stat("built_waiting", 2));
  CHECK_FALSE(f.receive(quiet));
  CHECK(f.stat("waiting_requests") == 2);

  // Step 2 completes the lead, and both waiting requests get their batch.
  f.send_plan(2);
  auto first = f.receive(patience);
  auto second = f.receive(patience);
  REQUIRE(first);
  REQUIRE(second);
  CHECK(*first == 0);
  CHECK(*second == 1);
  CHECK(f.stat("waiting_requests") == 0);

  // After the release, a request for a built step gets it at once.
  f.request(2);
  auto third = f.receive(patience);
  REQUIRE(third);
  CHECK(*third == 2);
}

TEST_CASE("constructor releases on late request", "[constructor]") {
  // The lead is built before the trainer's first request, which gets its
  // batch at once.
  constructor_fixture f(2, true);
  f.send_plan(0);
  f.send_plan(1);
  REQUIRE(f.wait_for_stat("built_waiting", 2));
  f.request(0);
  auto first = f.receive(patience);
  REQUIRE(first);
  CHECK(*first == 0);
}

TEST_CASE("constructor without hold serves at once", "[constructor]") {
  // A replacement constructor (hold_first_batch false) and a job without
  // startup_prefetch_steps both send step 0 as soon as it is built.
  for (auto [lead, hold] : {std::pair<int, bool>{3, false}, {0, true}}) {
    CAPTURE(lead, hold);
    constructor_fixture f(lead, hold);
    f.request(0);
    REQUIRE(f.wait_for_stat("waiting_requests", 1));
    f.send_plan(0);
    auto first = f.receive(patience);
    REQUIRE(first);
    CHECK(*first == 0);
  }
}
