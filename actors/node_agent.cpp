#include "actors/node_agent.hpp"

#include <caf/io/all.hpp>

#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "actors/constructor.hpp"
#include "actors/node_links.hpp"
#include "actors/source_pool.hpp"
#include "actors/tls.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "common/metrics_server.hpp"
#include "sources/tokenizer.hpp"
#include "transport/payload_wire.hpp"
#include "transport/router_server.hpp"

namespace overlord::actors {

namespace {

constexpr auto heartbeat_interval = std::chrono::seconds(1);
// How long a node keeps serving and reconnecting after losing a remote
// planner before it gives up.
constexpr auto planner_wait = std::chrono::seconds(300);

// Pools by source, read by the payload server thread.
struct payload_routes {
  std::mutex mutex;
  std::map<uint32_t, caf::actor> pools;
};


struct agent_state {
  static inline const char* name = "node_agent";

  agent_setup setup;
  std::shared_ptr<spdlog::logger> log;
  std::optional<planner::job_config> config;
  std::shared_ptr<const sources::gpt2_tokenizer> tokenizer;
  std::vector<caf::actor> children;
  std::vector<caf::actor> constructors;
  std::set<std::string> connected;  // loader nodes reached directly
  std::chrono::steady_clock::time_point planner_lost_at;
  // Join requests sent so far. A reply lost in transit is retried.
  int join_attempts = 0;

  // Payload serving to remote constructors: the ROUTER server, its bound
  // endpoint, and the pool of each source for the server thread.
  std::shared_ptr<transport::router_server> payload_server;
  std::string payload_endpoint;
  std::shared_ptr<payload_routes> routes = std::make_shared<payload_routes>();

  ~agent_state() {
    if (payload_server)
      payload_server->stop();
  }
};

using agent_actor = caf::stateful_actor<agent_state>;

// Loads the tokenizer on first use: constructor-only nodes never need it.
const std::shared_ptr<const sources::gpt2_tokenizer>& tokenizer_of(
    agent_actor* self) {
  auto& st = self->state;
  if (!st.tokenizer)
    st.tokenizer = st.setup.tokenizer &&
                           st.setup.tokenizer_directory == st.config->tokenizer
                       ? st.setup.tokenizer
                       : sources::gpt2_tokenizer::load(st.config->tokenizer);
  return st.tokenizer;
}

// Starts the node's payload server on first use and returns its endpoint.
const std::string& payload_endpoint(agent_actor* self) {
  auto& st = self->state;
  if (st.payload_server || st.setup.payload_endpoint.empty())
    return st.payload_endpoint;
  auto server = std::make_shared<transport::router_server>(
      *st.setup.zmq_context, st.config->max_request_bytes,
      st.setup.curve.get());
  st.payload_endpoint = server->bind(st.setup.payload_endpoint);
  auto routes = st.routes;
  auto log = st.log;
  auto id = st.setup.info.id;
  server->start([server_ptr = server.get(), routes, log, id](
                    const std::string& client, std::string_view frame) {
    auto request = transport::decode_payload_request(frame);
    if (!request) {
      log->warn("node={} rejected a malformed payload request of {} bytes",
                id, frame.size());
      return;
    }
    caf::actor pool;
    {
      std::lock_guard<std::mutex> guard(routes->mutex);
      auto found = routes->pools.find(request->source);
      if (found != routes->pools.end())
        pool = found->second;
    }
    if (!pool) {
      server_ptr->send(client, transport::encode_payload_reply(
                                   request->id,
                                   static_cast<uint8_t>(errc::not_found),
                                   "node " + id + " runs no pool for source " +
                                       std::to_string(request->source),
                                   nullptr, 0));
      return;
    }
    caf::anon_send(pool, serve_atom::value, client, request->id,
                   request->step, request->sequence, request->offset,
                   request->length);
  });
  st.payload_server = std::move(server);
  st.log->info("node={} serves payloads at {}", id, st.payload_endpoint);
  return st.payload_endpoint;
}

// Opens a direct connection to every loader node this constructor
// fetches from, so payloads bypass the planner.
void connect_loaders(agent_actor* self,
                     const std::vector<std::string>& addresses) {
  auto& st = self->state;
  for (const auto& address : addresses)
    if (address != st.setup.info.address)
      connect_directly(self->system(), address, st.connected, st.log,
                       st.setup.info.id);
}

// A join reply normally takes milliseconds. On a timeout the request is
// sent again, and the planner replies to a repeated join from the same
// agent with the job config again.
constexpr std::chrono::seconds join_timeout{10};
constexpr int max_join_attempts = 3;

caf::behavior agent_behavior(agent_actor* self, agent_setup setup) {
  auto& st = self->state;
  st.setup = std::move(setup);
  st.log = get_logger("actors");
  const auto id = st.setup.info.id;

  self->set_down_handler([=](caf::down_msg& down) {
    auto& s = self->state;
    if (down.source != s.setup.planner.address())
      return;
    if (s.setup.planner_address.empty()) {
      // The planner in this process stops with it on a shutdown.
      if (down.reason == caf::exit_reason::user_shutdown) {
        s.log->info("node={} planner stopped; stopping", id);
        self->send(s.setup.supervisor, leave_atom::value);
        return;
      }
      s.log->error("node={} lost the planner ({}); stopping", id,
                   self->system().render(down.reason));
      self->send(s.setup.supervisor, fatal_atom::value,
                 "node " + id + " lost the planner");
      return;
    }
    metrics::set_health(false, "lost the planner; reconnecting to " +
                                   s.setup.planner_address);
    // Keep serving what is built, and wait for the planner to come back
    // (restarted with --resume); then hand it what this node runs.
    s.log->warn("node={} lost the planner ({}); serving built batches and "
                "reconnecting to {}",
                id, self->system().render(down.reason),
                s.setup.planner_address);
    s.planner_lost_at = std::chrono::steady_clock::now();
    self->delayed_send(self, std::chrono::seconds(1), reconnect_atom::value);
  });
  self->monitor(st.setup.planner);

  auto join = [=](const std::string& address) {
    auto& s = self->state;
    s.setup.info.address = address;
    s.join_attempts++;
    self->request(s.setup.planner, join_timeout, join_atom::value,
                  s.setup.info)
      .then(
          [=](planner::job_config& config) {
            auto& s = self->state;
            s.config = std::move(config);
            s.log->info("node={} role={} joined the planner: {} sources, {} "
                        "ranks",
                        id, s.setup.info.role, s.config->sources.size(),
                        s.config->ranks);
            metrics::set_health(true, "joined the planner");
            self->send(s.setup.planner, log_level_atom::value, id,
                       describe_log_levels());
            self->send(self, heartbeat_atom::value);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            if (err == caf::sec::request_timeout &&
                s.join_attempts < max_join_attempts) {
              s.log->warn("node={} join request timed out after {} s "
                          "(attempt {} of {}); sending it again",
                          id, join_timeout.count(), s.join_attempts,
                          max_join_attempts);
              self->send(self, join_atom::value, address);
              return;
            }
            auto message = "node " + id + " could not join the planner: " +
                           self->system().render(err);
            s.log->error("{}", message);
            self->send(s.setup.supervisor, fatal_atom::value, message);
          });
  };

  return {
      [=](join_atom, const std::string& address) { join(address); },
      [=](reconnect_atom) {
        auto& s = self->state;
        auto colon = s.setup.planner_address.rfind(':');
        auto host = s.setup.planner_address.substr(0, colon);
        auto port = static_cast<uint16_t>(
            std::stoi(s.setup.planner_address.substr(colon + 1)));
        auto remote = connect_actor(self->system(), host, port,
                                    std::chrono::seconds(5));
        if (!remote) {
          if (std::chrono::steady_clock::now() - s.planner_lost_at >
              planner_wait) {
            auto message = "node " + id + " found no planner at " +
                           s.setup.planner_address + " for " +
                           std::to_string(planner_wait.count()) + " s";
            s.log->error("{}; stopping", message);
            self->send(s.setup.supervisor, fatal_atom::value, message);
            return;
          }
          self->delayed_send(self, std::chrono::seconds(1),
                             reconnect_atom::value);
          return;
        }
        s.setup.planner = *remote;
        self->monitor(s.setup.planner);
        s.log->info("node={} reached the planner again at {}", id,
                    s.setup.planner_address);
        for (const auto& constructor : s.constructors)
          self->send(constructor, planner_atom::value, s.setup.planner);
        // Join first (the planner replies with the plane), then report the
        // constructors this node still runs.
        self->request(s.setup.planner, std::chrono::seconds(30),
                      join_atom::value, s.setup.info)
            .then(
                [=](planner::job_config&) {
                  auto& st2 = self->state;
                  metrics::set_health(true, "joined the restarted planner");
                  self->send(st2.setup.planner, log_level_atom::value, id,
                             describe_log_levels());
                  auto assets = std::make_shared<std::vector<rank_asset>>();
                  auto pending =
                      std::make_shared<size_t>(st2.constructors.size());
                  auto report = [=] {
                    self->send(self->state.setup.planner, rejoin_atom::value,
                               id, *assets);
                  };
                  if (*pending == 0) {
                    report();
                    return;
                  }
                  for (const auto& constructor : st2.constructors)
                    self->request(constructor, std::chrono::seconds(5),
                                  rejoin_atom::value)
                        .then(
                            [=](rank_asset& asset) {
                              assets->push_back(std::move(asset));
                              if (--*pending == 0)
                                report();
                            },
                            [=](caf::error&) {
                              if (--*pending == 0)
                                report();
                            });
                },
                [=](caf::error& err) {
                  auto& st2 = self->state;
                  st2.log->error("node={} could not join the restarted "
                                 "planner: {}",
                                 id, self->system().render(err));
                  self->send(st2.setup.supervisor, fatal_atom::value,
                             "node " + id + " could not rejoin the planner");
                });
      },
      [=](heartbeat_atom) {
        auto& s = self->state;
        self->send(s.setup.planner, heartbeat_atom::value, id);
        self->delayed_send(self, heartbeat_interval, heartbeat_atom::value);
      },
      [=](spawn_pool_atom, uint32_t source,
          stream_position start) -> caf::result<caf::actor, std::string> {
        auto& s = self->state;
        if (!s.config || source >= s.config->sources.size())
          return caf::make_error(caf::sec::invalid_argument,
                                 "node " + id + " has no source " +
                                     std::to_string(source));
        try {
          auto endpoint = payload_endpoint(self);
          pool_setup pool{*s.config, source, tokenizer_of(self),
                          s.setup.supervisor, start, s.payload_server};
          auto pool_actor = spawn_source_pool(self->system(), std::move(pool));
          self->link_to(pool_actor);
          s.children.push_back(pool_actor);
          caf::actor replaced;
          {
            std::lock_guard<std::mutex> guard(s.routes->mutex);
            auto& route = s.routes->pools[source];
            replaced = route;
            route = pool_actor;
          }
          if (replaced) {
            // A restarted planner starts its own pools; the old one's
            // stream state is unknown to it.
            self->unlink_from(replaced);
            self->send_exit(replaced, caf::exit_reason::user_shutdown);
          }
          return {pool_actor, endpoint};
        } catch (const error& e) {
          s.log->error("node={} cannot start source={}: {}", id,
                       s.config->sources[source].name, e.what());
          return caf::make_error(caf::sec::runtime_error, e.what());
        }
      },
      [=](spawn_rank_atom, uint32_t rank, std::vector<caf::actor> pools,
          std::vector<std::string> loader_addresses,
          std::vector<std::string> payload_endpoints, int32_t pad_id,
          bool shadow,
          bool hold_first_batch) -> caf::result<caf::actor, std::string> {
        auto& s = self->state;
        if (!s.config)
          return caf::make_error(caf::sec::invalid_argument,
                                 "node " + id + " has not joined yet");
        connect_loaders(self, loader_addresses);
        constructor_setup setup;
        setup.config = *s.config;
        setup.rank = rank;
        setup.pools = std::move(pools);
        setup.payload_endpoints = std::move(payload_endpoints);
        setup.planner = s.setup.planner;
        setup.supervisor = s.setup.supervisor;
        setup.pad_id = pad_id;
        setup.node_id = id;
        setup.bind = s.setup.info.bind;
        setup.shadow = shadow;
        setup.hold_first_batch = hold_first_batch;
        setup.zmq_context = s.setup.zmq_context;
        setup.curve = s.setup.curve;
        std::string endpoint;
        try {
          auto constructor =
              spawn_constructor(self->system(), setup, &endpoint);
          self->link_to(constructor);
          s.children.push_back(constructor);
          s.constructors.push_back(constructor);
          return {constructor, endpoint};
        } catch (const error& e) {
          s.log->error("node={} cannot serve rank={}{}: {}", id, rank,
                       shadow ? " as shadow" : "", e.what());
          return caf::make_error(caf::sec::runtime_error, e.what());
        } catch (const zmq::error_t& e) {
          s.log->error("node={} cannot serve rank={}: {}", id, rank, e.what());
          return caf::make_error(caf::sec::runtime_error, e.what());
        }
      },
      [=](log_level_atom, const std::string& logger,
          const std::string& level) -> caf::result<std::string> {
        auto& s = self->state;
        try {
          check_logger_level(logger, level);
          s.log->info("node={} logger={} level={} set on request", id, logger,
                      level);
          set_logger_level(logger, level);
        } catch (const error& e) {
          return caf::make_error(caf::sec::invalid_argument,
                                 std::string(e.what()));
        }
        return describe_log_levels();
      },
      [=](leave_atom) {
        auto& s = self->state;
        s.log->info("node={} drained; stopping", id);
        self->send(s.setup.supervisor, leave_atom::value);
      },
      [=](bye_atom) -> caf::result<bool> {
        auto& s = self->state;
        if (!s.setup.planner)
          return false;
        auto reply = self->make_response_promise<bool>();
        self->request(s.setup.planner, std::chrono::seconds(1), bye_atom::value,
                      id)
            .then([=](bool accepted) mutable { reply.deliver(accepted); },
                  [=](caf::error&) mutable { reply.deliver(false); });
        return reply;
      },
  };
}

}  // namespace

caf::actor spawn_node_agent(caf::actor_system& system, agent_setup setup) {
  return system.spawn(agent_behavior, std::move(setup));
}

}  // namespace overlord::actors
