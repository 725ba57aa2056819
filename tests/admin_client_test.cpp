// Tests of tools::find_rank against a scripted planner actor published on
// 127.0.0.1 in the test process: retries while the rank is unassigned, a
// new connection after a request without a reply, and the deadline.

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "actors/messages.hpp"
#include "actors/tls.hpp"
#include "common/error.hpp"
#include "tools/admin_client.hpp"

namespace {

using overlord::actors::endpoints_atom;
using overlord::actors::lookup_atom;

class server_config : public caf::actor_system_config {
 public:
  server_config() {
    overlord::actors::add_message_types(*this);
    load<caf::io::middleman>();
  }
};

// A script for the fake planner: how many lookups it rejects as "not
// assigned" and how many endpoints requests it leaves without a reply
// before it replies normally.
struct script {
  int unassigned_lookups = 0;
  int silent_endpoints = 0;
  std::atomic<int> lookups{0};
  std::atomic<int> endpoint_requests{0};

  // The CAF nodes that sent requests: one per client actor system, so a
  // new connection adds one.
  std::mutex mutex;
  std::set<caf::node_id> senders;
};

caf::behavior scripted_planner(caf::event_based_actor* self,
                               std::shared_ptr<script> plan) {
  // Promises kept here stay pending, so the client sees no reply at all.
  auto pending = std::make_shared<std::vector<caf::response_promise>>();
  return {
      [=](lookup_atom, uint32_t rank)
          -> caf::result<std::string, std::string> {
        {
          std::lock_guard<std::mutex> lock(plan->mutex);
          plan->senders.insert(self->current_sender()->node());
        }
        if (plan->lookups++ < plan->unassigned_lookups)
          return caf::make_error(caf::sec::runtime_error,
                                 "rank " + std::to_string(rank) +
                                     " has no constructor yet");
        return {std::string("tcp://127.0.0.1:7001"), std::string("constructor-2")};
      },
      [=](endpoints_atom, uint32_t)
          -> caf::result<std::vector<std::string>, std::vector<std::string>> {
        if (plan->endpoint_requests++ < plan->silent_endpoints) {
          pending->push_back(self->make_response_promise());
          return pending->back();
        }
        return {std::vector<std::string>{"tcp://127.0.0.1:7001",
                                         "tcp://127.0.0.1:7002"},
                std::vector<std::string>{"constructor-2", "constructor-1"}};
      },
  };
}

struct published_planner {
  explicit published_planner(std::shared_ptr<script> plan)
      : planner(system.spawn(scripted_planner, std::move(plan))) {
    auto bound = overlord::actors::publish_actor(system, planner, 0, "127.0.0.1");
    REQUIRE(bound);
    address = "127.0.0.1:" + std::to_string(*bound);
  }
  ~published_planner() { caf::anon_send_exit(planner, caf::exit_reason::kill); }

  server_config config;
  caf::actor_system system{config};
  caf::actor planner;
  std::string address;
};

}  // namespace

TEST_CASE("find_rank retries unassigned rank") {
  auto plan = std::make_shared<script>();
  plan->unassigned_lookups = 2;
  published_planner server(plan);

  auto route = overlord::tools::find_rank(server.address, 1,
                                          std::chrono::seconds(10));
  CHECK(route.endpoint == "tcp://127.0.0.1:7001");
  CHECK(route.node == "constructor-2");
  REQUIRE(route.endpoints.size() == 2);
  CHECK(route.endpoints[1] == "tcp://127.0.0.1:7002");
  CHECK(plan->lookups == 3);
  std::lock_guard<std::mutex> lock(plan->mutex);
  CHECK(plan->senders.size() == 1);
}

TEST_CASE("find_rank resends unanswered request") {
  auto plan = std::make_shared<script>();
  plan->silent_endpoints = 1;
  published_planner server(plan);

  // The first endpoints request gets no reply. After the 5 s attempt
  // timeout the lookup starts again on a new connection and succeeds.
  auto started = std::chrono::steady_clock::now();
  auto route = overlord::tools::find_rank(server.address, 0,
                                          std::chrono::seconds(8));
  auto waited = std::chrono::steady_clock::now() - started;
  CHECK(route.endpoints.size() == 2);
  CHECK(plan->lookups == 2);
  CHECK(plan->endpoint_requests == 2);
  std::lock_guard<std::mutex> lock(plan->mutex);
  CHECK(plan->senders.size() == 2);
  CHECK(waited >= std::chrono::seconds(5));
}

TEST_CASE("find_rank stops at its deadline") {
  auto plan = std::make_shared<script>();
  plan->unassigned_lookups = 1000000;
  published_planner server(plan);

  try {
    overlord::tools::find_rank(server.address, 0, std::chrono::seconds(1));
    FAIL("find_rank returned for a rank that stays unassigned");
  } catch (const overlord::error& e) {
    CHECK(e.code() == overlord::errc::unavailable);
    CHECK(std::string(e.what()).find("has no constructor yet") != std::string::npos);
  }
  CHECK(plan->lookups >= 3);
}

TEST_CASE("find_rank stops when callback throws") {
  auto plan = std::make_shared<script>();
  plan->unassigned_lookups = 1000000;
  published_planner server(plan);

  int calls = 0;
  auto stop_on_second = [&calls] {
    if (++calls == 2)
      throw overlord::error(overlord::errc::invalid_input, "interrupted");
  };
  CHECK_THROWS_WITH(overlord::tools::find_rank(server.address, 0,
                                               std::chrono::seconds(10), {},
                                               stop_on_second),
                    "interrupted");
  CHECK(calls == 2);
  CHECK(plan->lookups == 2);
}

TEST_CASE("find_rank reports unreachable planner") {
  // The port of a listener that is closed again, so nothing accepts there.
  uint16_t port = 0;
  {
    auto plan = std::make_shared<script>();
    published_planner server(plan);
    port = static_cast<uint16_t>(
        std::stoi(server.address.substr(server.address.rfind(':') + 1)));
  }
  try {
    overlord::tools::find_rank("127.0.0.1:" + std::to_string(port), 0,
                               std::chrono::milliseconds(600));
    FAIL("find_rank returned without a planner");
  } catch (const overlord::error& e) {
    CHECK(e.code() == overlord::errc::unavailable);
    CHECK(std::string(e.what()).find("cannot reach the planner") != std::string::npos);
  }
}

TEST_CASE("endpoints name each node") {
  auto plan = std::make_shared<script>();
  published_planner server(plan);

  overlord::tools::admin_client admin(server.address, std::chrono::seconds(10));
  auto endpoints = admin.endpoints(0);
  REQUIRE(endpoints.size() == 2);
  CHECK(endpoints[0].first == "tcp://127.0.0.1:7001");
  CHECK(endpoints[0].second == "constructor-2");
  CHECK(endpoints[1].first == "tcp://127.0.0.1:7002");
  CHECK(endpoints[1].second == "constructor-1");
}
