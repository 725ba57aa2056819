#include "actors/node_agent.hpp"

#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "actors/constructor.hpp"
#include "actors/node_links.hpp"
#include "actors/source_pool.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "sources/tokenizer.hpp"
#include "transport/payload_wire.hpp"
#include "transport/router_server.hpp"

namespace overlord::actors {

namespace {

constexpr auto heartbeat_interval = std::chrono::seconds(1);

// Pools by source, read by the payload server thread.
struct payload_routes {
  std::mutex mutex;
  std::map<uint32_t, caf::actor> pools;
};

// Payload requests are a few dozen bytes.
constexpr int64_t max_payload_request_bytes = 1024;

struct agent_state {
  static inline const char* name = "node_agent";

  agent_setup setup;
  std::shared_ptr<spdlog::logger> log;
  std::optional<planner::job_config> config;
  std::shared_ptr<const sources::gpt2_tokenizer> tokenizer;
  std::vector<caf::actor> children;
  std::set<std::string> connected;  // loader nodes reached directly

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
    st.tokenizer = sources::gpt2_tokenizer::load(st.config->tokenizer);
  return st.tokenizer;
}

// Starts the node's payload server on first use and returns its endpoint.
const std::string& payload_endpoint(agent_actor* self) {
  auto& st = self->state;
  if (st.payload_server || st.setup.payload_endpoint.empty())
    return st.payload_endpoint;
  auto server = std::make_shared<transport::router_server>(
      *st.setup.zmq_context, max_payload_request_bytes);
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

caf::behavior agent_behavior(agent_actor* self, agent_setup setup) {
  auto& st = self->state;
  st.setup = std::move(setup);
  st.log = get_logger("actors");
  const auto id = st.setup.info.id;

  self->set_down_handler([=](caf::down_msg& down) {
    auto& s = self->state;
    // NOTE: a node does not wait for a restarted planner to re-register
    // with; it stops, and the job is resumed from its checkpoint.
    if (down.source == s.setup.planner.address()) {
      s.log->error("node={} lost the planner ({}); stopping", id,
                   self->system().render(down.reason));
      self->send(s.setup.supervisor, fatal_atom::value,
                 "node " + id + " lost the planner");
    }
  });
  self->monitor(st.setup.planner);

  auto join = [=](const std::string& address) {
    auto& s = self->state;
    s.setup.info.address = address;
    self->request(s.setup.planner, std::chrono::seconds(30), join_atom::value,
                  s.setup.info)
      .then(
          [=](planner::job_config& config) {
            auto& s = self->state;
            s.config = std::move(config);
            s.log->info("node={} role={} joined the planner: {} sources, {} "
                        "ranks",
                        id, s.setup.info.role, s.config->sources.size(),
                        s.config->ranks);
            self->send(self, heartbeat_atom::value);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            auto message = "node " + id + " could not join the planner: " +
                           self->system().render(err);
            s.log->error("{}", message);
            self->send(s.setup.supervisor, fatal_atom::value, message);
          });
  };

  return {
      [=](join_atom, const std::string& address) { join(address); },
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
          {
            std::lock_guard<std::mutex> guard(s.routes->mutex);
            s.routes->pools[source] = pool_actor;
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
          bool shadow) -> caf::result<caf::actor, std::string> {
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
        setup.zmq_context = s.setup.zmq_context;
        std::string endpoint;
        try {
          auto constructor =
              spawn_constructor(self->system(), setup, &endpoint);
          self->link_to(constructor);
          s.children.push_back(constructor);
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
      [=](leave_atom) {
        auto& s = self->state;
        s.log->info("node={} drained; stopping", id);
        self->send(s.setup.supervisor, leave_atom::value);
      },
  };
}

}  // namespace

caf::actor spawn_node_agent(caf::actor_system& system, agent_setup setup) {
  return system.spawn(agent_behavior, std::move(setup));
}

}  // namespace overlord::actors
