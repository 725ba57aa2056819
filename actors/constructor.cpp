#include "actors/constructor.hpp"

#include <map>

#include "actors/messages.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "transport/batch_builder.hpp"
#include "transport/batch_server.hpp"

namespace overlord::actors {

namespace {

// Served batches kept for a trainer that asks for the same step again
// (after a timeout on its side, for example).
constexpr uint64_t served_batches_kept = 2;

struct pending_build {
  planner::rank_plan plan;
  // Tokens of each piece, row-major in plan order.
  std::vector<std::vector<int32_t>> payloads;
  size_t missing = 0;
};

using batch_buffer = std::shared_ptr<flatbuffers::DetachedBuffer>;

struct constructor_state {
  static inline const char* name = "constructor";

  std::shared_ptr<const constructor_setup> setup;
  std::shared_ptr<spdlog::logger> log;
  std::shared_ptr<transport::batch_server> server;
  std::map<uint64_t, pending_build> building;
  std::map<uint64_t, batch_buffer> built;
  std::map<uint64_t, std::vector<std::string>> waiting;  // step -> clients
  int64_t served = -1;
  uint64_t batches_served = 0;
  uint64_t fetch_errors = 0;

  ~constructor_state() {
    if (server)
      server->stop();
  }
};

using constructor_actor = caf::stateful_actor<constructor_state>;

zmq::message_t to_message(const batch_buffer& buffer) {
  // The message borrows the buffer and keeps it alive until ZeroMQ is done
  // sending, so a batch is never copied on its way out.
  auto* keeper = new batch_buffer(buffer);
  return zmq::message_t(
      buffer->data(), buffer->size(),
      [](void*, void* hint) { delete static_cast<batch_buffer*>(hint); },
      keeper);
}

void send_error(constructor_actor* self, const std::string& client, errc code,
                const std::string& message) {
  auto frame = transport::encode_error(static_cast<uint8_t>(code), message);
  self->state.server->send(client, zmq::message_t(frame.data(), frame.size()));
}

void deliver(constructor_actor* self, uint64_t step, const std::string& client) {
  auto& st = self->state;
  st.server->send(client, to_message(st.built.at(step)));
  st.batches_served++;
  if (static_cast<int64_t>(step) > st.served) {
    st.served = static_cast<int64_t>(step);
    self->send(st.setup->planner, served_atom::value, st.setup->rank, step);
    // Drop batches the trainer has moved past.
    while (!st.built.empty() &&
           st.built.begin()->first + served_batches_kept <= step)
      st.built.erase(st.built.begin());
  }
}

void finish_build(constructor_actor* self, uint64_t step) {
  auto& st = self->state;
  auto found = st.building.find(step);
  auto& pending = found->second;

  transport::batch_layout layout;
  layout.sequence_length =
      static_cast<uint32_t>(st.setup->config.sequence_length);
  layout.pad_id = st.setup->pad_id;
  for (const auto& source : st.setup->config.sources)
    layout.source_names.push_back(source.name);

  std::vector<size_t> row_start;
  size_t index = 0;
  for (const auto& row : pending.plan.rows) {
    row_start.push_back(index);
    index += row.size();
  }
  auto buffer = std::make_shared<flatbuffers::DetachedBuffer>(
      transport::build_batch(pending.plan, layout,
                             [&](size_t row, size_t piece) {
                               return pending.payloads[row_start[row] + piece]
                                   .data();
                             }));
  st.built[step] = std::move(buffer);
  st.building.erase(found);

  auto clients = st.waiting.find(step);
  if (clients != st.waiting.end()) {
    auto list = std::move(clients->second);
    st.waiting.erase(clients);
    for (const auto& client : list)
      deliver(self, step, client);
  }
}

void start_build(constructor_actor* self, planner::rank_plan plan) {
  auto& st = self->state;
  const uint64_t step = plan.step;
  auto& pending = st.building[step];
  pending.plan = std::move(plan);
  size_t count = 0;
  for (const auto& row : pending.plan.rows)
    count += row.size();
  pending.payloads.resize(count);
  pending.missing = count;
  if (count == 0) {
    finish_build(self, step);
    return;
  }

  size_t index = 0;
  for (const auto& row : pending.plan.rows) {
    for (const auto& p : row) {
      self->request(st.setup->pools.at(p.source), caf::infinite,
                    fetch_atom::value, p.sequence, p.offset, p.length)
          .then(
              [=](std::vector<int32_t>& tokens) {
                auto& s = self->state;
                auto& build = s.building.at(step);
                build.payloads[index] = std::move(tokens);
                if (--build.missing == 0)
                  finish_build(self, step);
              },
              [=](caf::error& err) {
                auto& s = self->state;
                s.fetch_errors++;
                auto message = "rank=" + std::to_string(s.setup->rank) +
                               " step=" + std::to_string(step) +
                               " payload fetch failed: " +
                               self->system().render(err);
                s.log->error("{}", message);
                self->send(s.setup->supervisor, fatal_atom::value, message);
              });
      ++index;
    }
  }
}

std::string endpoint_of(const constructor_setup& setup) {
  return "tcp://" + setup.config.bind + ":" +
         std::to_string(setup.config.base_port + setup.rank);
}

caf::behavior constructor_behavior(
    constructor_actor* self, std::shared_ptr<const constructor_setup> setup,
    std::shared_ptr<transport::batch_server> server) {
  auto& st = self->state;
  st.setup = setup;
  st.log = get_logger("actors");
  st.server = std::move(server);
  const uint32_t rank = setup->rank;

  caf::actor handle = caf::actor_cast<caf::actor>(self);
  st.server->start(
      [handle](const std::string& client, const transport::request& value) {
        caf::anon_send(handle, pull_atom::value, client, value.step,
                       value.rank);
      },
      [log = st.log, rank](const std::string& reason) {
        log->warn("rank={} rejected a request: {}", rank, reason);
      });
  st.log->info("rank={} constructor serving at {}", rank, endpoint_of(*setup));
  self->send(setup->planner, register_atom::value, rank, handle);

  return {
      [=](plan_atom, planner::rank_plan& plan) {
        start_build(self, std::move(plan));
      },
      [=](pull_atom, const std::string& client, uint64_t step,
          uint32_t requested_rank) {
        auto& s = self->state;
        if (requested_rank != rank) {
          send_error(self, client, errc::invalid_config,
                     "this endpoint serves rank " + std::to_string(rank) +
                         ", not rank " + std::to_string(requested_rank) +
                         "; connect to base_port + rank");
          return;
        }
        if (s.built.count(step)) {
          deliver(self, step, client);
          return;
        }
        if (static_cast<int64_t>(step) + static_cast<int64_t>(served_batches_kept) <=
            s.served) {
          send_error(self, client, errc::not_found,
                     "rank " + std::to_string(rank) + " no longer holds step " +
                         std::to_string(step) + "; the trainer is at step " +
                         std::to_string(s.served));
          return;
        }
        s.waiting[step].push_back(client);
      },
      [=](stats_atom) {
        auto& s = self->state;
        counters stats;
        stats["served_step"] = static_cast<uint64_t>(s.served + 1);
        stats["batches_served"] = s.batches_served;
        stats["built_waiting"] = s.built.size();
        stats["building"] = s.building.size();
        stats["fetch_errors"] = s.fetch_errors;
        return stats;
      },
  };
}

}  // namespace

caf::actor spawn_constructor(caf::actor_system& system,
                             constructor_setup setup) {
  auto shared = std::make_shared<const constructor_setup>(std::move(setup));
  // Bind before spawning so that a taken port fails start-up right here.
  auto server = std::make_shared<transport::batch_server>(*shared->zmq_context);
  server->bind(endpoint_of(*shared));
  return system.spawn(constructor_behavior, shared, server);
}

}  // namespace overlord::actors
