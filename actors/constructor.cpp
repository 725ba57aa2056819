#include "actors/constructor.hpp"

#include <map>
#include <set>

#include "actors/messages.hpp"
#include "actors/node_links.hpp"
#include "common/error.hpp"
#include "common/job_metrics.hpp"
#include "common/log.hpp"
#include "transport/batch_builder.hpp"
#include "transport/payload_client.hpp"
#include "transport/recycling_allocator.hpp"
#include "transport/request_quota.hpp"
#include "transport/wire.hpp"
#include "transport/router_server.hpp"

namespace overlord::actors {

namespace {

// A fetch without a reply after this time is sent again, so a lost pool
// delays a batch but does not stall it for good.
constexpr auto fetch_timeout = std::chrono::seconds(10);

// Requests for steps not built yet that one constructor keeps; beyond
// that, clients are rejected rather than remembered without bound.
constexpr size_t max_waiting_requests = 4096;

// A fetch sent to a loader node's payload server, by request id.
struct remote_fetch {
  uint64_t step = 0;
  size_t index = 0;
  std::chrono::steady_clock::time_point sent;
};

struct pending_build {
  planner::rank_plan plan;
  // Tokens of each piece, row-major in plan order, and the image of each
  // piece that starts an image-text document (null elsewhere).
  std::vector<std::vector<int32_t>> payloads;
  std::vector<std::shared_ptr<const sources::decoded_image>> images;
  std::vector<bool> have;
  size_t missing = 0;
  std::chrono::steady_clock::time_point started;
};

using batch_buffer = std::shared_ptr<flatbuffers::DetachedBuffer>;

// A trainer request for a step not built yet.
struct waiting_request {
  std::string client;
  std::chrono::steady_clock::time_point since;
};

// A payload reply carries at most one row of int32 tokens, the largest
// image a source may produce (8-bit pixels, 3 channels), its header and
// an error text; ZeroMQ rejects larger ones unread.
int64_t max_payload_reply_bytes(const planner::job_config& config) {
  int64_t image = 0;
  for (const auto& source : config.sources)
    if (source.format == planner::source_format::webdataset)
      image = std::max<int64_t>(
          image, 3 * static_cast<int64_t>(source.image_max_pixels) + 1024);
  return 4 * static_cast<int64_t>(config.sequence_length) + image + 64 * 1024;
}

struct constructor_state {
  static inline const char* name = "constructor";

  std::shared_ptr<const constructor_setup> setup;
  caf::actor planner;  // replaced when a restarted planner is joined
  std::vector<caf::actor> pools;
  std::shared_ptr<spdlog::logger> log;
  std::vector<std::string> payload_endpoints;
  std::shared_ptr<transport::router_server> server;
  std::unique_ptr<transport::payload_client> payload_client;
  std::map<uint64_t, remote_fetch> remote_fetches;
  uint64_t next_fetch_id = 1;
  std::map<uint64_t, pending_build> building;
  // Built batches by step, one per context-parallel rank.
  std::map<uint64_t, std::vector<batch_buffer>> built;
  // Clients waiting for (step, cp rank).
  std::map<std::pair<uint64_t, uint32_t>, std::vector<waiting_request>>
      waiting;
  // Per context-parallel rank: the last step up to which its trainer
  // reported holding every batch. The planner releases steps only below
  // this mark, never one still being built or in a queue.
  std::vector<int64_t> served_by_cp;
  bool received_plan = false;
  // Standby: plans kept, nothing built, until promoted or asked.
  bool standby = false;
  // True until the first batch goes out when startup_prefetch_steps
  // requests a lead and this is the rank's first primary of the job.
  bool holding_first_batch = false;
  std::chrono::steady_clock::time_point first_request;
  std::map<uint64_t, planner::rank_plan> standby_plans;
  int64_t served = -1;
  uint64_t batches_served = 0;
  uint64_t fetch_retries = 0;
  size_t waiting_count = 0;
  // Open requests per trainer connection, bounded by max_client_requests.
  std::unique_ptr<transport::request_quota> quota;
  std::chrono::steady_clock::time_point last_retry_log;
  uint64_t retries_since_log = 0;
  std::set<std::string> connected;  // loader nodes reached directly

  ~constructor_state() {
    if (payload_client)
      payload_client->stop();
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

// Records that context-parallel rank `cp_rank` holds every step up to
// `step`, and reports the step to the planner once every cp rank does.
// NOTE: consumers of one cp rank (pipeline stages) share this mark, so the
// fastest of them decides which batches are dropped.
void note_progress(constructor_actor* self, uint32_t cp_rank, uint64_t step) {
  auto& st = self->state;
  // The step comes from the trainer, which holds every step up to it, so
  // the mark only moves forward and never has gaps.
  auto& mine = st.served_by_cp[cp_rank];
  mine = std::max(mine, static_cast<int64_t>(step));
  int64_t all = *std::min_element(st.served_by_cp.begin(),
                                  st.served_by_cp.end());
  if (all > st.served) {
    st.served = all;
    metrics::record_rank_step(st.setup->rank, all + 1);
    if (st.planner)
      self->send(st.planner, served_atom::value, st.setup->rank,
                 static_cast<uint64_t>(all));
    // Keep batches a lagging consumer may still ask for: the plan window.
    auto keep = static_cast<uint64_t>(st.setup->config.plan_ahead);
    while (!st.built.empty() && st.built.begin()->first + keep <=
                                    static_cast<uint64_t>(all))
      st.built.erase(st.built.begin());
  }
}

void deliver(constructor_actor* self, uint64_t step, uint32_t cp_rank,
             const std::string& client) {
  auto& st = self->state;
  const auto& buffer = st.built.at(step).at(cp_rank);
  if (st.setup->config.topology.cp > 1)
    st.log->debug("rank={} step={} cp_rank={} sent: {} bytes", st.setup->rank,
                  step, cp_rank, buffer->size());
  else
    st.log->debug("rank={} step={} sent: {} bytes", st.setup->rank, step,
                  buffer->size());
  st.server->send(client, to_message(buffer));
  st.batches_served++;
  metrics::record_batch_served(st.setup->rank);
}

// Delivers the built `step` to every client waiting for one of its
// context-parallel slices.
void deliver_waiting(constructor_actor* self, uint64_t step) {
  auto& st = self->state;
  for (uint32_t cp_rank = 0; cp_rank < st.built.at(step).size(); ++cp_rank) {
    auto clients = st.waiting.find({step, cp_rank});
    if (clients == st.waiting.end())
      continue;
    auto list = std::move(clients->second);
    st.waiting.erase(clients);
    st.waiting_count -= list.size();
    auto now = std::chrono::steady_clock::now();
    for (const auto& request : list) {
      metrics::record_rank_wait(
          st.setup->rank,
          std::chrono::duration<double>(now - request.since).count());
      st.quota->close(request.client);
      deliver(self, step, cp_rank, request.client);
    }
  }
}

// Ends the hold on the first batch once startup_prefetch_steps steps from
// the oldest requested step on are built, and delivers every waiting
// request whose step is built. `on_request` is true when a request calls
// it, not a build, so a release then means the lead was built earlier.
void release_first_batch(constructor_actor* self, bool on_request) {
  auto& st = self->state;
  if (!st.holding_first_batch || st.waiting.empty())
    return;
  const uint64_t first = st.waiting.begin()->first.first;
  const auto lead = static_cast<uint64_t>(st.setup->config.startup_prefetch_steps);
  for (uint64_t step = first; step < first + lead; ++step)
    if (!st.built.count(step))
      return;
  st.holding_first_batch = false;
  if (on_request)
    st.log->info("rank={} step={} first request served at once: steps {} to "
                 "{} were built before it arrived",
                 st.setup->rank, first, first, first + lead - 1);
  else
    st.log->info("rank={} step={} first batch released: steps {} to {} are "
                 "built, {:.1f} ms after the first request",
                 st.setup->rank, first, first, first + lead - 1,
                 std::chrono::duration<double, std::milli>(
                     std::chrono::steady_clock::now() - st.first_request)
                     .count());
  std::vector<uint64_t> ready;
  for (const auto& [key, clients] : st.waiting)
    if (st.built.count(key.first) &&
        (ready.empty() || ready.back() != key.first))
      ready.push_back(key.first);
  for (uint64_t step : ready)
    deliver_waiting(self, step);
  metrics::record_prefetch_depth(st.setup->rank, st.waiting_count);
}

void finish_build(constructor_actor* self, uint64_t step) {
  auto& st = self->state;
  auto found = st.building.find(step);
  auto& pending = found->second;
  const auto fetched = std::chrono::steady_clock::now();

  transport::batch_layout layout;
  layout.sequence_length =
      pending.plan.sequence_length != 0
          ? pending.plan.sequence_length
          : static_cast<uint32_t>(st.setup->config.sequence_length);
  layout.pad_id = st.setup->pad_id;
  layout.cp_size = static_cast<uint32_t>(st.setup->config.topology.cp);
  for (const auto& source : st.setup->config.sources)
    layout.source_names.push_back(source.name);

  std::vector<size_t> row_start;
  size_t index = 0;
  for (const auto& row : pending.plan.rows) {
    row_start.push_back(index);
    index += row.size();
  }
  auto rows = transport::lay_out_rows(
      pending.plan, layout,
      [&](size_t row, size_t piece) {
        return pending.payloads[row_start[row] + piece].data();
      },
      [&](size_t row, size_t piece) {
        return pending.images[row_start[row] + piece].get();
      });
  std::vector<batch_buffer> batches;
  for (uint32_t cp_rank = 0; cp_rank < layout.cp_size; ++cp_rank)
    batches.push_back(std::make_shared<flatbuffers::DetachedBuffer>(
        transport::serialize_batch(pending.plan, layout, rows, cp_rank,
                                   &transport::batch_allocator())));
  st.built[step] = std::move(batches);
  const auto pieces = pending.have.size();
  const auto now = std::chrono::steady_clock::now();
  const auto fetch_ms =
      std::chrono::duration<double, std::milli>(fetched - pending.started).count();
  const auto layout_ms =
      std::chrono::duration<double, std::milli>(now - fetched).count();
  st.building.erase(found);
  st.log->debug("rank={} step={} built: {} pieces fetched in {:.1f} ms, laid "
                "out in {:.1f} ms",
                st.setup->rank, step, pieces, fetch_ms, layout_ms);

  if (st.holding_first_batch) {
    release_first_batch(self, false);
    return;
  }
  deliver_waiting(self, step);
  metrics::record_prefetch_depth(st.setup->rank, st.waiting_count);
}

const planner::piece* piece_at(const pending_build& build, size_t index) {
  for (const auto& row : build.plan.rows) {
    if (index < row.size())
      return &row[index];
    index -= row.size();
  }
  return nullptr;
}

void retry_later(constructor_actor* self, uint64_t step, size_t index,
                 uint32_t source, uint64_t sequence, const std::string& reason);

void accept_payload(constructor_actor* self, uint64_t step, size_t index,
                    piece_payload payload) {
  auto& tokens = payload.tokens;
  auto& s = self->state;
  auto build = s.building.find(step);
  if (build == s.building.end() || build->second.have[index])
    return;  // a late reply to a request that was sent again
  // The piece, plus the next token when the document goes on: anything
  // else would make the batch read past the payload.
  const auto* p = piece_at(build->second, index);
  size_t expected = p->length + (p->ends_document() ? 0 : 1);
  if (tokens.size() != expected) {
    retry_later(self, step, index, p->source, p->sequence,
                "reply holds " + std::to_string(tokens.size()) +
                    " tokens where " + std::to_string(expected) +
                    " were expected");
    return;
  }
  const bool needs_image = p->patches > 0 && p->starts_document();
  if (needs_image && (!payload.image || payload.image->patches != p->patches)) {
    retry_later(self, step, index, p->source, p->sequence,
                "reply holds no image of " + std::to_string(p->patches) +
                    " patches for document " + p->key);
    return;
  }
  build->second.payloads[index] = std::move(tokens);
  if (needs_image)
    build->second.images[index] = std::move(payload.image);
  build->second.have[index] = true;
  if (--build->second.missing == 0)
    finish_build(self, step);
}

void retry_later(constructor_actor* self, uint64_t step, size_t index,
                 uint32_t source, uint64_t sequence, const std::string& reason) {
  auto& s = self->state;
  s.fetch_retries++;
  metrics::record_fetch_retry(s.setup->rank);
  // A lost pool fails every open fetch at once: log one line a second.
  auto now = std::chrono::steady_clock::now();
  s.retries_since_log++;
  if (now - s.last_retry_log >= std::chrono::seconds(1)) {
    s.log->warn("rank={} step={} fetch of source={} sequence={} failed: {}; "
                "retrying ({} failed fetches since the last report)",
                s.setup->rank, step, s.setup->config.sources[source].name,
                sequence, reason, s.retries_since_log);
    s.last_retry_log = now;
    s.retries_since_log = 0;
  }
  // Ask again after a pause; a pool update may arrive meanwhile.
  self->delayed_send(self, std::chrono::seconds(1), fetch_atom::value, step,
                     static_cast<uint64_t>(index));
}

void fetch_piece(constructor_actor* self, uint64_t step, size_t index,
                 const planner::piece& p) {
  auto& st = self->state;
  const auto& endpoint = st.payload_endpoints.at(p.source);
  if (!endpoint.empty()) {
    // Remote pool: ZeroMQ carries payloads between processes several
    // times faster than CAF's serialisation of token vectors.
    if (!st.payload_client) {
      caf::actor handle = caf::actor_cast<caf::actor>(self);
      st.payload_client = std::make_unique<transport::payload_client>(
          *st.setup->zmq_context, [handle](transport::payload_reply reply) {
            caf::anon_send(handle, payload_atom::value, reply.id, reply.code,
                           std::move(reply.message),
                           piece_payload{std::move(reply.tokens),
                                         std::move(reply.image)});
          },
          st.setup->curve.get(), max_payload_reply_bytes(st.setup->config));
    }
    uint64_t id = st.next_fetch_id++;
    st.remote_fetches[id] = {step, index, std::chrono::steady_clock::now()};
    st.payload_client->request(
        endpoint, {id, p.source, step, p.sequence, p.offset, p.length});
    return;
  }
  self->request(st.pools.at(p.source), fetch_timeout, fetch_atom::value, step,
                p.sequence, p.offset, p.length)
      .then(
          [=](piece_payload& payload) {
            accept_payload(self, step, index, std::move(payload));
          },
          [=](caf::error& err) {
            retry_later(self, step, index, p.source, p.sequence,
                        self->system().render(err));
          });
}

void start_build(constructor_actor* self, planner::rank_plan plan) {
  auto& st = self->state;
  const uint64_t step = plan.step;
  if (!st.received_plan) {
    // The first plan marks where this constructor starts: step 0 for a new
    // job, later after a resume or when it replaces a lost constructor.
    st.received_plan = true;
    for (auto& mark : st.served_by_cp)
      mark = std::max(mark, static_cast<int64_t>(step) - 1);
    st.served = static_cast<int64_t>(step) - 1;
  }
  if (st.built.count(step) || st.building.count(step) ||
      static_cast<int64_t>(step) <= st.served)
    return;  // a plan sent again after a reassignment
  auto& pending = st.building[step];
  pending.plan = std::move(plan);
  size_t count = 0;
  for (const auto& row : pending.plan.rows)
    count += row.size();
  pending.payloads.resize(count);
  pending.images.resize(count);
  pending.have.assign(count, false);
  pending.missing = count;
  pending.started = std::chrono::steady_clock::now();
  if (count == 0) {
    finish_build(self, step);
    return;
  }
  size_t index = 0;
  for (const auto& row : pending.plan.rows)
    for (const auto& p : row)
      fetch_piece(self, step, index++, p);
}

std::string endpoint_of(const constructor_setup& setup) {
  auto bind = setup.bind.empty() ? setup.config.bind : setup.bind;
  // A shadow binds any free port: trainers find it through the planner.
  int port = setup.shadow
                 ? 0
                 : setup.config.base_port + static_cast<int>(setup.rank);
  return "tcp://" + bind + ":" + std::to_string(port);
}

// Leaves standby: builds every kept plan, oldest first.
void activate(constructor_actor* self, const char* reason) {
  auto& st = self->state;
  if (!st.standby)
    return;
  st.standby = false;
  // The trainers are mid-run, so waiting for a lead would stall them.
  st.holding_first_batch = false;
  st.log->info("rank={} shadow takes over ({}) from step {}", st.setup->rank,
               reason,
               st.standby_plans.empty() ? st.served + 1
                                        : static_cast<int64_t>(
                                              st.standby_plans.begin()->first));
  auto plans = std::move(st.standby_plans);
  st.standby_plans.clear();
  for (auto& [step, plan] : plans)
    start_build(self, std::move(plan));
}

caf::behavior constructor_behavior(
    constructor_actor* self, std::shared_ptr<const constructor_setup> setup,
    std::shared_ptr<transport::router_server> server) {
  auto& st = self->state;
  st.setup = setup;
  st.planner = setup->planner;
  st.pools = setup->pools;
  st.payload_endpoints = setup->payload_endpoints;
  st.payload_endpoints.resize(st.pools.size());
  st.log = get_logger("actors");
  st.server = std::move(server);
  metrics::start_rank_counters(setup->rank);
  st.standby = setup->shadow;
  st.holding_first_batch = setup->hold_first_batch && !setup->shadow &&
                           setup->config.startup_prefetch_steps > 1;
  st.served_by_cp.assign(setup->config.topology.cp, -1);
  st.quota = std::make_unique<transport::request_quota>(
      static_cast<uint32_t>(setup->config.max_client_requests));
  const uint32_t rank = setup->rank;
  const uint32_t cp_size = static_cast<uint32_t>(setup->config.topology.cp);

  caf::actor handle = caf::actor_cast<caf::actor>(self);
  st.server->start([handle, log = st.log, rank](const std::string& client,
                                                std::string_view frame) {
    auto request = transport::decode_request(frame);
    if (!request) {
      log->warn("rank={} rejected a malformed request of {} bytes", rank,
                frame.size());
      return;
    }
    caf::anon_send(handle, pull_atom::value, client, request->step,
                   request->rank, request->cp_rank, request->received_before);
  });
  self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
  st.log->info("rank={} {} serving at {} node={}", rank,
               setup->shadow ? "shadow constructor" : "constructor",
               st.server->endpoint(), setup->node_id);

  return {
      [=](plan_atom, planner::rank_plan& plan) {
        auto& s = self->state;
        if (s.standby) {
          if (static_cast<int64_t>(plan.step) > s.served)
            s.standby_plans[plan.step] = std::move(plan);
          return;
        }
        start_build(self, std::move(plan));
      },
      [=](served_atom, uint64_t step) {
        // The primary's trainers have every step up to `step`; a shadow
        // drops those plans and would start after them.
        auto& s = self->state;
        if (!s.standby)
          return;
        s.served = std::max(s.served, static_cast<int64_t>(step));
        for (auto& mark : s.served_by_cp)
          mark = std::max(mark, static_cast<int64_t>(step));
        s.received_plan = true;
        s.standby_plans.erase(s.standby_plans.begin(),
                              s.standby_plans.upper_bound(step));
      },
      [=](promote_atom) { activate(self, "promoted by the planner"); },
      [=](demote_atom) {
        // The trainers moved to the shadow, which is the primary now; this
        // constructor waits in standby in its place, keeping its plans.
        auto& s = self->state;
        if (s.standby)
          return;
        s.standby = true;
        for (auto& [step, build] : s.building)
          s.standby_plans[step] = std::move(build.plan);
        s.building.clear();
        s.built.clear();
        s.waiting.clear();
        s.waiting_count = 0;
        s.quota->clear();
        s.remote_fetches.clear();
        s.log->info("rank={} constructor stands by as shadow", rank);
      },
      [=](planner_atom, caf::actor planner) {
        auto& s = self->state;
        s.planner = std::move(planner);
      },
      [=](rejoin_atom) {
        // What a restarted planner needs to adopt this constructor.
        auto& s = self->state;
        return rank_asset{rank, s.standby, s.served,
                          caf::actor_cast<caf::actor>(self),
                          s.server->endpoint()};
      },
      [=](leave_atom) {
        // Not needed any more (a shadow whose rank moved on): stop without
        // taking the node down.
        self->quit();
      },
      [=](fetch_atom, uint64_t step, uint64_t index) {
        // Retry of a failed fetch, with the current pool of its source.
        auto& s = self->state;
        auto build = s.building.find(step);
        if (build == s.building.end() || build->second.have[index])
          return;
        if (auto* p = piece_at(build->second, index))
          fetch_piece(self, step, index, *p);
      },
      [=](payload_atom, uint64_t id, uint8_t code, std::string& message,
          piece_payload& payload) {
        auto& s = self->state;
        auto found = s.remote_fetches.find(id);
        if (found == s.remote_fetches.end())
          return;  // timed out and sent again already
        auto fetch = found->second;
        s.remote_fetches.erase(found);
        if (code == 0) {
          accept_payload(self, fetch.step, fetch.index, std::move(payload));
          return;
        }
        auto build = s.building.find(fetch.step);
        if (build == s.building.end())
          return;
        if (auto* p = piece_at(build->second, fetch.index))
          retry_later(self, fetch.step, fetch.index, p->source, p->sequence,
                      message);
      },
      [=](tick_atom) {
        // Remote fetches without a reply in time are sent again.
        auto& s = self->state;
        auto now = std::chrono::steady_clock::now();
        std::vector<remote_fetch> expired;
        for (auto it = s.remote_fetches.begin(); it != s.remote_fetches.end();)
          if (now - it->second.sent > fetch_timeout) {
            expired.push_back(it->second);
            it = s.remote_fetches.erase(it);
          } else {
            ++it;
          }
        for (const auto& fetch : expired) {
          auto build = s.building.find(fetch.step);
          if (build == s.building.end() || build->second.have[fetch.index])
            continue;
          if (auto* p = piece_at(build->second, fetch.index))
            retry_later(self, fetch.step, fetch.index, p->source, p->sequence,
                        "no answer from the payload server");
        }
        if (!s.standby) {
          metrics::record_rank_step(rank, s.served + 1);
          metrics::record_prefetch_depth(rank, s.waiting_count);
        }
        self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
      },
      [=](pool_update_atom, uint32_t source, caf::actor pool,
          const std::string& address, const std::string& payload_endpoint) {
        auto& s = self->state;
        if (source >= s.pools.size())
          return;
        connect_directly(self->system(), address, s.connected, s.log,
                         s.setup->node_id);
        s.pools[source] = std::move(pool);
        s.payload_endpoints[source] = payload_endpoint;
        s.log->info("rank={} fetches source={} from its new pool at {}", rank,
                    s.setup->config.sources[source].name, address);
        // Requests open at the lost pool may never get a reply, so ask the
        // new pool now. A late reply to an old request is ignored.
        for (auto& [step, build] : s.building) {
          size_t index = 0;
          for (const auto& row : build.plan.rows)
            for (const auto& p : row) {
              if (p.source == source && !build.have[index])
                fetch_piece(self, step, index, p);
              ++index;
            }
        }
      },
      [=](pull_atom, const std::string& client, uint64_t step,
          uint32_t requested_rank, uint32_t cp_rank, uint64_t received_before) {
        auto& s = self->state;
        // A trainer that comes to the shadow lost its primary.
        activate(self, "a trainer failed over to it");
        // The trainer holds every step before `received_before`: that, not
        // what was sent (a batch may die in a queue), is its progress.
        if (received_before > 0 && cp_rank < cp_size && requested_rank == rank)
          note_progress(self, cp_rank, received_before - 1);
        if (requested_rank != rank || cp_rank >= cp_size) {
          send_error(self, client, errc::invalid_config,
                     "this endpoint serves rank " + std::to_string(rank) +
                         " with " + std::to_string(cp_size) +
                         " context-parallel slices, not rank " +
                         std::to_string(requested_rank) + " slice " +
                         std::to_string(cp_rank) +
                         "; connect to base_port + rank");
          return;
        }
        if (s.built.count(step) && !s.holding_first_batch) {
          deliver(self, step, cp_rank, client);
          return;
        }
        if (static_cast<int64_t>(step) <= s.served &&
            !s.building.count(step) && !s.built.count(step)) {
          send_error(self, client, errc::not_found,
                     "rank " + std::to_string(rank) + " no longer holds step " +
                         std::to_string(step) + "; its trainers are at step " +
                         std::to_string(s.served + 1));
          return;
        }
        if (s.waiting_count >= max_waiting_requests) {
          send_error(self, client, errc::unavailable,
                     "rank " + std::to_string(rank) + " already holds " +
                         std::to_string(max_waiting_requests) +
                         " requests for steps not built yet; lower the "
                         "clients' prefetch");
          return;
        }
        if (!s.quota->try_open(client)) {
          uint64_t rejected = s.quota->rejected();
          if (rejected <= 20 || rejected % 1000 == 0)
            s.log->warn("rank={} rejected a request for step={}: the client "
                        "already has {} open (max_client_requests); {} "
                        "rejected so far",
                        rank, step, s.quota->max_per_client(), rejected);
          send_error(self, client, errc::unavailable,
                     "rank " + std::to_string(rank) + " already holds " +
                         std::to_string(s.quota->max_per_client()) +
                         " open requests of this client (max_client_requests)"
                         "; lower the client's prefetch");
          return;
        }
        const auto now = std::chrono::steady_clock::now();
        if (s.holding_first_batch && s.waiting.empty() &&
            s.first_request == std::chrono::steady_clock::time_point{})
          s.first_request = now;
        s.waiting[{step, cp_rank}].push_back({client, now});
        s.waiting_count++;
        metrics::record_prefetch_depth(rank, s.waiting_count);
        // The lead may have been built before this request arrived.
        release_first_batch(self, true);
      },
      [=](stats_atom) {
        auto& s = self->state;
        counters stats;
        stats["step"] = static_cast<uint64_t>(s.served + 1);
        stats["batches_served"] = s.batches_served;
        stats["built_waiting"] = s.built.size();
        stats["waiting_requests"] = s.waiting_count;
        stats["building"] = s.building.size();
        stats["fetch_retries"] = s.fetch_retries;
        stats["rejected_requests"] = s.quota->rejected();
        stats["rejected_frames"] = s.server->rejected_frames();
        stats["standby"] = s.standby ? 1 : 0;
        return stats;
      },
  };
}

}  // namespace

caf::actor spawn_constructor(caf::actor_system& system,
                             constructor_setup setup, std::string* endpoint) {
  auto shared = std::make_shared<const constructor_setup>(std::move(setup));
  // Bind before spawning so that a taken port fails right here.
  auto server = std::make_shared<transport::router_server>(
      *shared->zmq_context, shared->config.max_request_bytes,
      shared->curve.get());
  auto bound = server->bind(endpoint_of(*shared));
  if (endpoint)
    *endpoint = bound;
  return system.spawn(constructor_behavior, shared, server);
}

}  // namespace overlord::actors
