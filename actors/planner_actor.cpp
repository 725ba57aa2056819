#include "actors/planner_actor.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <limits>
#include <map>
#include <optional>

#include "actors/messages.hpp"
#include "common/error.hpp"
#include "common/job_metrics.hpp"
#include "common/log.hpp"
#include "planner/autoscaler.hpp"
#include "planner/step_planner.hpp"

namespace overlord::actors {

namespace {

using clock_type = std::chrono::steady_clock;

// Metadata is requested from a pool whenever its queued documents hold
// fewer tokens than refill_steps steps draw from the source, and enough
// documents to fill the queue to queue_steps such steps at the source's
// mean length, within min_announce..max_announce. Every document queued
// here keeps its tokens (or image) in its pool, so the queue stays short:
// refills are one round trip, and planning runs plan_ahead steps ahead.
constexpr double refill_steps = 1;
constexpr double queue_steps = 2;
constexpr uint32_t min_announce = 8;
constexpr uint32_t max_announce = 512;
constexpr uint32_t first_announce = 16;
constexpr auto tick_interval = std::chrono::milliseconds(500);
constexpr auto spawn_timeout = std::chrono::seconds(30);
constexpr auto stats_timeout = std::chrono::seconds(2);
// Start attempts (one per tick) before a pool or constructor that cannot
// start anywhere stops the job, for example on a port that stays taken.
constexpr int max_start_attempts = 20;

struct node_entry {
  node_info info;
  caf::actor agent;
  clock_type::time_point last_seen;
  uint64_t join_order = 0;
  bool alive = true;
  bool draining = false;
  std::string log_levels;  // as the node last reported them

  bool loads() const { return info.role == "loader" || info.role == "all"; }
  bool constructs() const {
    return info.role == "constructor" || info.role == "all";
  }
  bool usable() const { return alive && !draining; }
};

struct source_slot {
  caf::actor pool;
  std::string node;
  std::string payload_endpoint;  // empty when the pool is in this process
  bool spawning = false;
  int failed_starts = 0;
  bool announcing = false;
  counters stats;
  double docs_per_s = 0;
  uint64_t last_documents = 0;
  clock_type::time_point last_stats;
  // Pool size as last set, and the autoscaler's last decision.
  int workers = 0;
  std::string scaled;
  // Announced documents, for the mean document length.
  uint64_t announced_documents = 0;
  uint64_t announced_tokens = 0;
};

struct rank_slot {
  caf::actor constructor;
  std::string node;
  std::string endpoint;
  bool spawning = false;
  int failed_starts = 0;
  int64_t served = -1;
  // True once a primary for this rank has started. Its trainers may then
  // be mid-run, so a replacement serves at once (startup_prefetch_steps).
  bool started_before = false;
  // The shadow on another constructor node, promoted when the primary's
  // node is lost. Empty when no other constructor node exists.
  caf::actor shadow;
  std::string shadow_node;
  std::string shadow_endpoint;
  bool shadow_spawning = false;
  int shadow_failed_starts = 0;
};

struct weight_change {
  uint64_t from_step = 0;
  std::vector<double> weights;  // every source's weight at from_step
  std::vector<bool> named;      // the sources set, or empty for all
};

struct planner_state {
  static inline const char* name = "planner";

  // Checkpoints: the store, the step of the last snapshot written, pool
  // start positions from a restored snapshot, weight changes still to
  // apply, and the step the replay after a restore runs to.
  std::shared_ptr<checkpoint::checkpoint_store> store;
  int64_t last_snapshot_step = -1;
  std::vector<std::optional<stream_position>> restored_starts;
  std::map<uint64_t, checkpoint::weight_change> pending_weights;
  std::map<uint64_t, checkpoint::step_delta> logged_steps;
  uint64_t replay_until = 0;
  uint64_t snapshot_bytes = 0;
  double snapshot_ms = 0;
  uint64_t delta_bytes = 0;  // of the last step delta
  uint64_t deltas_written = 0;
  double delta_ms_total = 0;

  // Recovery after a planner restart: the planner waits for the nodes to
  // report the constructors they still run and resumes where the slowest
  // rank's trainers are.
  bool recovering = false;
  // True when started with --recover, whose trainers were already running.
  bool recovered_job = false;
  clock_type::time_point recover_started;
  std::map<uint32_t, std::pair<std::string, rank_asset>> adopted_primaries;
  std::map<uint32_t, std::pair<std::string, rank_asset>> adopted_shadows;

  planner::job_config config;
  int32_t pad_id = 0;
  caf::actor supervisor;
  std::shared_ptr<spdlog::logger> log;
  std::unique_ptr<planner::step_planner> steps;

  std::map<std::string, node_entry> nodes;
  uint64_t joins = 0;
  // Whether the job's loader and constructor nodes use CURVE, set by the
  // first of them to join. Their ZeroMQ links need the same setting.
  std::optional<bool> curve;
  std::vector<source_slot> sources;
  std::vector<rank_slot> ranks;
  bool assigned = false;

  // Plans of steps some rank has not received, so that a replacement
  // constructor can be sent them again.
  std::map<uint64_t, std::vector<planner::rank_plan>> retained;
  // Stream positions of announced documents still needed, per source, so
  // that a replacement pool can resume the stream; the newest is kept.
  std::vector<std::map<uint64_t, planner::document_meta>> positions;
  int64_t released = -1;

  std::vector<weight_change> weight_changes;
  uint64_t planned_steps = 0;
  uint64_t padding_tokens = 0;
  uint64_t carried_pieces = 0;
  uint64_t failovers = 0;
  double last_imbalance = 1;
  double max_imbalance = 1;
  double imbalance_sum = 0;

  // Autoscaling: time planning spent waiting for a dry source while ranks
  // had room, and the consumption rate of the slowest rank.
  std::unique_ptr<planner::autoscaler> scaler;
  bool blocked = false;
  clock_type::time_point blocked_since;
  clock_type::time_point assigned_at;  // when work was first assigned
  double blocked_seconds = 0;
  double blocked_seconds_seen = 0;
  int64_t rate_served = -1;
  clock_type::time_point rate_time;
  double steps_per_s = 0;
  uint64_t scaling_decisions = 0;
  bool supply_check_pending = false;
  // When pools were last resized from their supply, so that it happens at
  // most once per interval.
  std::optional<clock_type::time_point> supply_decided_at;
};

using planner_actor = caf::stateful_actor<planner_state>;

void plan_ahead(planner_actor* self);
void maybe_assign(planner_actor* self);
void write_snapshot(planner_actor* self);
checkpoint::step_delta delta_of(const std::vector<double>& before,
                                const planner::step_plan& plan,
                                const planner::mixture& after);

const std::string& source_name(planner_actor* self, uint32_t source) {
  return self->state.config.sources[source].name;
}

// ---- Announcements -------------------------------------------------------

// Returns the mean tokens of `source`'s announced documents, or 0 before
// any were announced.
double mean_document_tokens(const planner_state& st, uint32_t source) {
  const auto& slot = st.sources[source];
  return slot.announced_documents == 0
             ? 0
             : static_cast<double>(slot.announced_tokens) /
                   static_cast<double>(slot.announced_documents);
}

// Returns, per source, the tokens a step is expected to draw from it at
// the next step's weights: its weight share of the step's tokens. With
// mix_by documents, the shares are weighted by mean document length once
// every weighted source has announced documents.
std::vector<double> expected_step_tokens(planner_actor* self) {
  auto& st = self->state;
  const auto weights = st.steps->weights_at(st.steps->next_step());
  std::vector<double> parts(weights.size());
  for (uint32_t s = 0; s < weights.size(); ++s) {
    parts[s] = weights[s];
    if (st.config.mix_by == planner::mix_unit::documents && weights[s] > 0) {
      const double mean = mean_document_tokens(st, s);
      if (mean == 0) {
        std::copy(weights.begin(), weights.end(), parts.begin());
        break;
      }
      parts[s] *= mean;
    }
  }
  double total = 0;
  for (double part : parts)
    total += part;
  for (double& part : parts)
    part = total > 0 ? part / total * static_cast<double>(
                                          st.config.tokens_per_step())
                     : 0;
  return parts;
}

void request_announcements(planner_actor* self, uint32_t source) {
  auto& st = self->state;
  auto& slot = st.sources[source];
  if (slot.announcing || !slot.pool)
    return;
  slot.announcing = true;
  auto pool = slot.pool;
  uint32_t count = first_announce;
  if (slot.announced_documents > 0) {
    const double missing =
        queue_steps * expected_step_tokens(self)[source] -
        static_cast<double>(st.steps->queued_tokens(source));
    const double wanted =
        std::ceil(missing / std::max(mean_document_tokens(st, source), 1.0));
    count = static_cast<uint32_t>(std::clamp(
        wanted, static_cast<double>(min_announce),
        static_cast<double>(max_announce)));
  }
  self->request(pool, caf::infinite, announce_atom::value, count)
      .then(
          [=](std::vector<planner::document_meta>& docs) {
            auto& s = self->state;
            if (s.sources[source].pool != pool)
              return;  // the pool was replaced; its successor re-announces
            s.sources[source].announcing = false;
            try {
              s.steps->add_documents(source, docs);
            } catch (const error& e) {
              s.log->error("{}", e.what());
              self->send(s.supervisor, fatal_atom::value,
                         std::string(e.what()));
              return;
            }
            for (const auto& doc : docs) {
              s.positions[source][doc.sequence] = doc;
              s.sources[source].announced_documents++;
              s.sources[source].announced_tokens += doc.tokens;
            }
            plan_ahead(self);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            if (s.sources[source].pool != pool)
              return;
            s.sources[source].announcing = false;
            s.log->warn("source={} announcement failed: {}; the planner "
                        "retries once the pool is back",
                        source_name(self, source), self->system().render(err));
          });
}

// ---- Planning ------------------------------------------------------------

void send_plan(planner_actor* self, const planner::rank_plan& plan) {
  auto& slot = self->state.ranks[plan.rank];
  if (slot.constructor)
    self->send(slot.constructor, plan_atom::value, plan);
  if (slot.shadow)
    self->send(slot.shadow, plan_atom::value, plan);
}

void apply_weights(planner_actor* self, const checkpoint::weight_change& change) {
  auto& st = self->state;
  st.steps->set_weights(change.weights, change.named);
  st.weight_changes.push_back({change.from_step, change.weights, change.named});
  std::string text;
  for (uint32_t s = 0; s < change.weights.size(); ++s)
    if (change.named.empty() || change.named[s])
      text += " " + source_name(self, s) + "=" + std::to_string(change.weights[s]);
  st.log->info("weights changed from step={}:{}", change.from_step, text);
}

void plan_steps(planner_actor* self);

// Plans as far as the window allows. A checkpoint that cannot be written
// or a replay that diverges stops the job: going on would break the
// promise that a resume reproduces the stream.
void plan_ahead(planner_actor* self) {
  try {
    plan_steps(self);
  } catch (const error& e) {
    auto& st = self->state;
    st.log->error("{}", e.what());
    self->send(st.supervisor, fatal_atom::value, std::string(e.what()));
  }
}

void plan_steps(planner_actor* self) {
  auto& st = self->state;
  if (!st.assigned)
    return;

  int64_t oldest_needed = std::numeric_limits<int64_t>::max();
  for (const auto& rank : st.ranks)
    oldest_needed = std::min(oldest_needed, rank.served + 1);
  const int64_t limit = oldest_needed + st.config.plan_ahead;

  while (static_cast<int64_t>(st.steps->next_step()) < limit) {
    const uint64_t step = st.steps->next_step();
    const bool replaying = step < st.replay_until;

    auto change = st.pending_weights.find(step);
    if (change != st.pending_weights.end()) {
      apply_weights(self, change->second);
      st.pending_weights.erase(change);
    }
    if (st.store && !replaying && step % st.config.checkpoint_every == 0 &&
        static_cast<int64_t>(step) != st.last_snapshot_step)
      write_snapshot(self);

    auto before = st.steps->current_mixture().drawn();
    auto outcome = st.steps->plan_next();
    if (!outcome.plan) {
      if (!st.blocked && !replaying) {
        st.blocked = true;
        st.blocked_since = self->clock().now();
      }
      request_announcements(self, *outcome.starved_source);
      break;
    }
    if (st.blocked) {
      st.blocked = false;
      st.blocked_seconds += std::chrono::duration<double>(
                                self->clock().now() - st.blocked_since)
                                .count();
    }
    auto& plan = *outcome.plan;
    auto delta = delta_of(before, plan, st.steps->current_mixture());

    if (replaying) {
      // Steps before the resume step are planned again only to rebuild the
      // state, and each must draw what the delta log recorded.
      auto logged = st.logged_steps.find(step);
      if (logged != st.logged_steps.end() &&
          (logged->second.drawn != delta.drawn ||
           logged->second.carried_pieces != delta.carried_pieces))
        throw error(errc::internal,
                    "replay diverged at step " + std::to_string(step) +
                        ": it drew other documents than the checkpoint "
                        "logged; the data files changed since");
      continue;
    }

    if (st.store) {
      // Write-ahead: the delta is on disk before any constructor receives
      // the plan it describes.
      auto started = clock_type::now();
      checkpoint::delta_record record;
      record.step = delta;
      st.delta_bytes = st.store->append_delta(checkpoint::encode_delta(record));
      st.deltas_written++;
      auto seconds =
          std::chrono::duration<double>(clock_type::now() - started).count();
      st.delta_ms_total += seconds * 1000;
      metrics::record_checkpoint("delta", st.delta_bytes, seconds);
    }

    st.planned_steps++;
    metrics::record_planned_step(plan.step, plan.imbalance);
    st.padding_tokens += plan.padding_tokens;
    st.carried_pieces += plan.carried_pieces;
    st.last_imbalance = plan.imbalance;
    st.max_imbalance = std::max(st.max_imbalance, plan.imbalance);
    st.imbalance_sum += plan.imbalance;
    for (const auto& rank_rows : plan.ranks)
      send_plan(self, rank_rows);
    st.retained[plan.step] = std::move(plan.ranks);
    if (plan.step % 100 == 0)
      st.log->info(
          "step={} planned; padding {:.2f}% so far; rank cost max/mean "
          "{:.3f} this step, {:.3f} mean, {:.3f} worst",
          plan.step,
          100.0 * st.padding_tokens /
              (static_cast<double>(st.planned_steps) *
               st.config.tokens_per_step()),
          plan.imbalance, st.imbalance_sum / st.planned_steps,
          st.max_imbalance);
    else
      st.log->debug("step={} planned", plan.step);
  }

  // Keep every weighted source's queue topped up so that planning rarely
  // waits on a round trip.
  const auto expected = expected_step_tokens(self);
  for (uint32_t source = 0; source < st.sources.size(); ++source)
    if (expected[source] > 0 &&
        static_cast<double>(st.steps->queued_tokens(source)) <
            refill_steps * expected[source])
      request_announcements(self, source);
}

// Oldest sequence of `source` that a plan not yet released or the step
// planner still refers to.
uint64_t oldest_needed_sequence(planner_actor* self, uint32_t source) {
  auto& st = self->state;
  uint64_t oldest = st.steps->oldest_held_sequence(source);
  for (const auto& [step, plans] : st.retained)
    for (const auto& plan : plans)
      for (const auto& row : plan.rows)
        for (const auto& p : row)
          if (p.source == source)
            oldest = std::min(oldest, p.sequence);
  return oldest;
}

void release_up_to(planner_actor* self, int64_t step) {
  auto& st = self->state;
  if (step <= st.released)
    return;
  st.released = step;
  st.retained.erase(st.retained.begin(),
                    st.retained.upper_bound(static_cast<uint64_t>(step)));
  for (uint32_t source = 0; source < st.sources.size(); ++source) {
    if (st.sources[source].pool)
      self->send(st.sources[source].pool, release_atom::value,
                 static_cast<uint64_t>(step),
                 oldest_needed_sequence(self, source));
    auto& known = st.positions[source];
    if (known.size() <= 1)
      continue;
    auto keep_from = known.lower_bound(oldest_needed_sequence(self, source));
    if (keep_from == known.end())
      --keep_from;  // keep the newest, where a fresh pool would resume
    known.erase(known.begin(), keep_from);
  }
}

// ---- Assignment ----------------------------------------------------------

// Computes where a pool for `source` must start so that the stream goes
// on exactly where the planner and the constructors need it.
// NOTE: the new pool's node is trusted to see the same shard files. Their
// sizes and contents are not compared with those the old pool read.
stream_position position_of(planner_actor* self, uint32_t source,
                            uint64_t needed, uint64_t announce_from) {
  auto& st = self->state;
  stream_position start;
  start.announce_from = announce_from;
  const auto& known = st.positions[source];
  bool before_known = !known.empty() && needed < known.begin()->first;
  if (known.empty() || before_known) {
    // Nothing announced since start-up, or the needed document came before
    // a restore: the beginning of the stream, or the restored snapshot's
    // position, which is at or before every document still needed.
    if (st.restored_starts[source]) {
      auto restored = *st.restored_starts[source];
      restored.announce_from = announce_from;
      return restored;
    }
    if (known.empty())
      return start;
  }

  auto found = known.find(needed);
  if (found != known.end()) {
    start.first_sequence = needed;
    start.epoch = found->second.epoch;
    start.shard_position = found->second.shard_position;
    start.record = found->second.record;
    return start;
  }
  // Nothing is held: continue after the newest announced document.
  const auto& newest = known.rbegin()->second;
  start.first_sequence = newest.sequence + 1;
  start.epoch = newest.epoch;
  start.shard_position = newest.shard_position;
  start.record = newest.record + 1;
  return start;
}

stream_position resume_position(planner_actor* self, uint32_t source) {
  return position_of(self, source, oldest_needed_sequence(self, source),
                     self->state.steps->next_sequence(source));
}

// ---- Checkpoints ---------------------------------------------------------

// Writes the snapshot of the state before the next step.
void write_snapshot(planner_actor* self) {
  auto& st = self->state;
  auto started = clock_type::now();
  auto saved = st.steps->save();

  checkpoint::snapshot_record record;
  record.step = saved.next_step;
  record.settings = checkpoint::stream_settings(st.config);
  record.topology = "ranks=" + std::to_string(st.config.ranks) +
                    " rows_per_rank=" + std::to_string(st.config.rows_per_rank);
  record.weights = saved.weights;
  record.weights_from_step = saved.weights_from_step;
  record.weights_from_steps = saved.weights_from_steps;
  record.mixture_weights = saved.mixture_weights;
  record.total_drawn = saved.total_drawn;
  record.carried = saved.carried;
  for (uint32_t source = 0; source < st.sources.size(); ++source) {
    uint64_t needed = saved.next_unplanned[source];
    for (const auto& p : saved.carried)
      if (p.source == source)
        needed = std::min(needed, p.sequence);
    auto start = position_of(self, source, needed, saved.next_unplanned[source]);
    checkpoint::source_cursor cursor;
    cursor.name = source_name(self, source);
    cursor.first_sequence = start.first_sequence;
    cursor.epoch = start.epoch;
    cursor.shard_position = start.shard_position;
    cursor.record = start.record;
    cursor.announce_from = saved.next_unplanned[source];
    cursor.drawn = saved.drawn[source];
    record.sources.push_back(cursor);
  }
  st.snapshot_bytes =
      st.store->write_snapshot(record.step, checkpoint::encode_snapshot(record),
                               st.config.checkpoint_keep);
  st.snapshot_ms = std::chrono::duration<double, std::milli>(
                       clock_type::now() - started)
                       .count();
  st.last_snapshot_step = static_cast<int64_t>(record.step);
  metrics::record_checkpoint("snapshot", st.snapshot_bytes,
                             st.snapshot_ms / 1000);
  st.log->info("step={} snapshot written to {}: {} bytes in {:.2f} ms",
               record.step, st.store->directory(), st.snapshot_bytes,
               st.snapshot_ms);
}

// Returns what `plan` drew per source, for the delta log.
checkpoint::step_delta delta_of(const std::vector<double>& before,
                                const planner::step_plan& plan,
                                const planner::mixture& after) {
  checkpoint::step_delta delta;
  delta.step = plan.step;
  for (size_t i = 0; i < before.size(); ++i)
    delta.drawn.push_back(after.drawn()[i] - before[i]);
  delta.carried_pieces = static_cast<uint32_t>(plan.carried_pieces);
  return delta;
}

// The usable node with the fewest assigned items, earliest join first;
// never `excluded`.
std::string pick_node(planner_actor* self, bool loader,
                      const std::string& excluded = "") {
  auto& st = self->state;
  std::string best;
  size_t best_load = 0;
  uint64_t best_order = 0;
  for (const auto& [id, node] : st.nodes) {
    if (!node.usable() || (loader ? !node.loads() : !node.constructs()) ||
        id == excluded)
      continue;
    size_t load = 0;
    if (loader) {
      for (const auto& slot : st.sources)
        load += slot.node == id;
    } else {
      for (const auto& slot : st.ranks)
        load += (slot.node == id) + (slot.shadow_node == id);
    }
    if (best.empty() || load < best_load ||
        (load == best_load && node.join_order < best_order)) {
      best = id;
      best_load = load;
      best_order = node.join_order;
    }
  }
  return best;
}

void assign_source(planner_actor* self, uint32_t source) {
  auto& st = self->state;
  auto node_id = pick_node(self, true);
  if (node_id.empty())
    return;
  auto& slot = st.sources[source];
  slot.spawning = true;
  slot.node = node_id;
  auto start = resume_position(self, source);
  st.log->info("source={} assigned to node={} from sequence {}",
               source_name(self, source), node_id, start.first_sequence);
  self->request(st.nodes[node_id].agent, spawn_timeout, spawn_pool_atom::value,
                source, start)
      .then(
          [=](caf::actor& pool, std::string& payload_endpoint) {
            auto& s = self->state;
            auto& slot = s.sources[source];
            slot.spawning = false;
            if (slot.node != node_id || !s.nodes[node_id].alive)
              return;
            slot.pool = pool;
            slot.payload_endpoint = payload_endpoint;
            slot.announcing = false;
            slot.failed_starts = 0;
            // A pool restarted elsewhere keeps the size it had grown to.
            if (slot.workers == 0)
              slot.workers = s.config.sources[source].workers;
            else if (slot.workers != s.config.sources[source].workers)
              self->send(pool, resize_atom::value,
                         static_cast<int32_t>(slot.workers));
            for (const auto& rank : s.ranks)
              for (const auto& constructor : {rank.constructor, rank.shadow})
                if (constructor)
                  self->send(constructor, pool_update_atom::value, source,
                             pool, s.nodes[node_id].info.address,
                             payload_endpoint);
            maybe_assign(self);
            plan_ahead(self);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            auto& slot = s.sources[source];
            slot.spawning = false;
            slot.node.clear();
            auto message = "source=" + source_name(self, source) +
                           " could not start on node=" + node_id + ": " +
                           self->system().render(err);
            if (++slot.failed_starts >= max_start_attempts) {
              s.log->error("{}; giving up", message);
              self->send(s.supervisor, fatal_atom::value, message);
              return;
            }
            s.log->warn("{}; retrying", message);
          });
}

void assign_shadow(planner_actor* self, uint32_t rank);

// The handles a constructor needs for every source, indexed by source:
// the pools, their loader nodes' CAF addresses and payload endpoints.
struct source_handle_lists {
  std::vector<caf::actor> pools;
  std::vector<std::string> loader_addresses;
  std::vector<std::string> payload_endpoints;
};

source_handle_lists source_handles(planner_actor* self) {
  auto& st = self->state;
  source_handle_lists out;
  for (const auto& slot : st.sources) {
    out.pools.push_back(slot.pool);
    out.loader_addresses.push_back(st.nodes[slot.node].info.address);
    out.payload_endpoints.push_back(slot.payload_endpoint);
  }
  return out;
}

void assign_rank(planner_actor* self, uint32_t rank) {
  auto& st = self->state;
  auto node_id = pick_node(self, false, st.ranks[rank].shadow_node);
  if (node_id.empty())
    return;
  auto sources = source_handles(self);
  auto& slot = st.ranks[rank];
  slot.spawning = true;
  slot.node = node_id;
  const bool hold_first_batch = !st.recovered_job && !slot.started_before;
  st.log->info("rank={} assigned to node={}", rank, node_id);
  self->request(st.nodes[node_id].agent, spawn_timeout, spawn_rank_atom::value,
                rank, sources.pools, sources.loader_addresses,
                sources.payload_endpoints, st.pad_id, false, hold_first_batch)
      .then(
          [=](caf::actor& constructor, std::string& endpoint) {
            auto& s = self->state;
            auto& slot = s.ranks[rank];
            slot.spawning = false;
            if (slot.node != node_id || !s.nodes[node_id].alive)
              return;
            slot.constructor = constructor;
            slot.endpoint = endpoint;
            slot.failed_starts = 0;
            slot.started_before = true;
            // Steps planned before this constructor existed.
            for (const auto& [step, plans] : s.retained)
              if (static_cast<int64_t>(step) > slot.served)
                self->send(constructor, plan_atom::value, plans[rank]);
            maybe_assign(self);
            plan_ahead(self);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            auto& slot = s.ranks[rank];
            slot.spawning = false;
            slot.node.clear();
            auto message = "rank=" + std::to_string(rank) +
                           " could not start on node=" + node_id + ": " +
                           self->system().render(err);
            if (++slot.failed_starts >= max_start_attempts) {
              s.log->error("{}; giving up", message);
              self->send(s.supervisor, fatal_atom::value, message);
              return;
            }
            s.log->warn("{}; retrying", message);
          });
}

// Starts a shadow for `rank` on a constructor node other than its
// primary's; it receives the same plans and builds nothing until needed.
void assign_shadow(planner_actor* self, uint32_t rank) {
  auto& st = self->state;
  auto& slot = st.ranks[rank];
  auto node_id = pick_node(self, false, slot.node);
  if (node_id.empty())
    return;  // no second constructor node: the rank runs without a shadow
  auto sources = source_handles(self);
  slot.shadow_spawning = true;
  slot.shadow_node = node_id;
  st.log->info("rank={} shadow assigned to node={}", rank, node_id);
  self->request(st.nodes[node_id].agent, spawn_timeout, spawn_rank_atom::value,
                rank, sources.pools, sources.loader_addresses,
                sources.payload_endpoints, st.pad_id, true, false)
      .then(
          [=](caf::actor& shadow, std::string& endpoint) {
            auto& s = self->state;
            auto& slot = s.ranks[rank];
            if (slot.shadow_node != node_id || !s.nodes[node_id].alive) {
              // The assignment changed while it started: stop it.
              self->send(shadow, leave_atom::value);
              return;
            }
            slot.shadow_spawning = false;
            slot.shadow_failed_starts = 0;
            slot.shadow = shadow;
            slot.shadow_endpoint = endpoint;
            if (slot.served >= 0)
              self->send(shadow, served_atom::value,
                         static_cast<uint64_t>(slot.served));
            for (const auto& [step, plans] : s.retained)
              if (static_cast<int64_t>(step) > slot.served)
                self->send(shadow, plan_atom::value, plans[rank]);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            auto& slot = s.ranks[rank];
            if (slot.shadow_node != node_id)
              return;
            slot.shadow_spawning = false;
            slot.shadow_node.clear();
            // A rank runs without a shadow rather than retrying forever.
            if (++slot.shadow_failed_starts == max_start_attempts)
              s.log->error("rank={} shadow could not start {} times; the rank "
                           "runs without one",
                           rank, max_start_attempts);
            else if (slot.shadow_failed_starts < max_start_attempts)
              s.log->warn("rank={} shadow could not start on node={}: {}", rank,
                          node_id, self->system().render(err));
          });
}

void maybe_assign(planner_actor* self) {
  auto& st = self->state;
  if (st.recovering)
    return;
  if (!st.assigned) {
    int loaders = 0, constructors = 0;
    for (const auto& [id, node] : st.nodes) {
      loaders += node.usable() && node.loads();
      constructors += node.usable() && node.constructs();
    }
    if (loaders < st.config.loader_nodes ||
        constructors < st.config.constructor_nodes)
      return;
    st.assigned = true;
    st.assigned_at = self->clock().now();
    st.log->info("{} loader and {} constructor nodes joined; assigning work",
                 loaders, constructors);
  }

  bool all_pools = true;
  for (uint32_t source = 0; source < st.sources.size(); ++source) {
    auto& slot = st.sources[source];
    if (!slot.pool && !slot.spawning)
      assign_source(self, source);
    all_pools = all_pools && slot.pool;
  }
  // Constructors take the pool handles, so they wait for every pool.
  if (!all_pools)
    return;
  for (uint32_t rank = 0; rank < st.ranks.size(); ++rank) {
    auto& slot = st.ranks[rank];
    if (!slot.constructor && !slot.spawning)
      assign_rank(self, rank);
    else if (slot.constructor && !slot.shadow && !slot.shadow_spawning &&
             slot.shadow_failed_starts < max_start_attempts)
      assign_shadow(self, rank);
  }
}

// Takes a node out of the job and moves its work to other nodes.
void retire_node(planner_actor* self, const std::string& id,
                 const std::string& reason, bool planned = false) {
  auto& st = self->state;
  auto found = st.nodes.find(id);
  if (found == st.nodes.end() || !found->second.alive)
    return;
  found->second.alive = false;
  st.failovers++;
  // A node that only paused would otherwise go on serving work that has
  // moved elsewhere, so the planner sends it leave_atom, unless the node
  // sent bye_atom and is stopping already.
  if (!planned)
    self->send(found->second.agent, leave_atom::value);

  std::string moved;
  for (uint32_t source = 0; source < st.sources.size(); ++source) {
    auto& slot = st.sources[source];
    if (slot.node != id)
      continue;
    slot = source_slot{};
    moved += " source=" + source_name(self, source);
    metrics::record_failover("loader");
  }
  for (uint32_t rank = 0; rank < st.ranks.size(); ++rank) {
    auto& slot = st.ranks[rank];
    if (slot.shadow_node == id) {
      slot.shadow = nullptr;
      slot.shadow_node.clear();
      slot.shadow_endpoint.clear();
      slot.shadow_spawning = false;
      moved += " shadow-of-rank=" + std::to_string(rank);
    }
    if (slot.node != id)
      continue;
    if (slot.shadow) {
      // The shadow has every plan the primary had: it serves from the next
      // step the trainers need, and a new shadow starts elsewhere.
      slot.constructor = slot.shadow;
      slot.node = slot.shadow_node;
      slot.endpoint = slot.shadow_endpoint;
      slot.shadow = nullptr;
      slot.shadow_node.clear();
      slot.shadow_endpoint.clear();
      self->send(slot.constructor, promote_atom::value);
      metrics::record_failover("shadow_promote");
      st.log->warn("rank={} promoted its shadow on node={} at {}", rank,
                   slot.node, slot.endpoint);
      moved += " rank=" + std::to_string(rank) + "(to its shadow)";
      continue;
    }
    auto served = slot.served;
    const bool started_before = slot.started_before;
    slot = rank_slot{};
    slot.served = served;
    slot.started_before = started_before;
    moved += " rank=" + std::to_string(rank);
    metrics::record_failover("constructor");
  }
  st.log->log(planned ? spdlog::level::info : spdlog::level::warn,
              "node={} role={} left the job: {}; reassigning{}", id,
              found->second.info.role, reason,
              moved.empty() ? " nothing" : moved);
  maybe_assign(self);
}

// ---- Admin ---------------------------------------------------------------

std::string status_json(planner_actor* self) {
  auto& st = self->state;
  rapidjson::StringBuffer text;
  rapidjson::Writer<rapidjson::StringBuffer> json(text);
  json.StartObject();
  json.Key("next_step");
  json.Uint64(st.steps->next_step());
  json.Key("released_step");
  json.Int64(st.released);
  json.Key("assigned");
  json.Bool(st.assigned);
  json.Key("log_levels");
  json.String(describe_log_levels().c_str());
  json.Key("autoscale");
  json.StartObject();
  json.Key("enabled");
  json.Bool(st.config.autoscale.enabled);
  json.Key("interval_ms");
  json.Int(st.config.autoscale.interval_ms);
  json.Key("cpu_budget");
  json.Int(st.config.autoscale.cpu_budget);
  json.Key("decisions");
  json.Uint64(st.scaling_decisions);
  json.EndObject();

  json.Key("nodes");
  json.StartArray();
  for (const auto& [id, node] : st.nodes) {
    json.StartObject();
    json.Key("id");
    json.String(id.c_str());
    json.Key("role");
    json.String(node.info.role.c_str());
    json.Key("pid");
    json.Uint(node.info.pid);
    json.Key("address");
    json.String(node.info.address.c_str());
    json.Key("state");
    const char* state = "up";
    if (!node.alive)
      state = "gone";
    else if (node.draining)
      state = "draining";
    json.String(state);
    json.Key("log_levels");
    json.String(node.log_levels.c_str());
    json.Key("sources");
    json.StartArray();
    for (uint32_t s = 0; s < st.sources.size(); ++s)
      if (st.sources[s].node == id)
        json.String(source_name(self, s).c_str());
    json.EndArray();
    json.Key("ranks");
    json.StartArray();
    for (uint32_t r = 0; r < st.ranks.size(); ++r)
      if (st.ranks[r].node == id)
        json.Uint(r);
    json.EndArray();
    json.EndObject();
  }
  json.EndArray();

  json.Key("sources");
  json.StartObject();
  const auto weights = st.steps->weights_at(st.steps->next_step());
  for (uint32_t s = 0; s < st.sources.size(); ++s) {
    const auto& slot = st.sources[s];
    auto value = [&](const char* key) {
      auto found = slot.stats.find(key);
      return found == slot.stats.end() ? uint64_t{0} : found->second;
    };
    json.Key(source_name(self, s).c_str());
    json.StartObject();
    json.Key("node");
    json.String(slot.node.c_str());
    json.Key("weight");
    json.Double(weights[s]);
    json.Key("weight_schedule");
    json.String(st.config.sources[s].describe_weight().c_str());
    json.Key("workers");
    json.Uint(static_cast<unsigned>(slot.workers > 0
                                        ? slot.workers
                                        : st.config.sources[s].workers));
    json.Key("autoscale");
    json.String(slot.scaled.c_str());
    json.Key("min_workers");
    json.Int(st.config.sources[s].min_workers);
    json.Key("max_workers");
    json.Int(st.config.sources[s].max_workers);
    json.Key("docs_per_s");
    json.Double(slot.docs_per_s);
    json.Key("latency_ms");
    json.Double(value("latency_us") / 1000.0);
    json.Key("buffered");
    json.Uint64(value("buffered"));
    json.Key("documents");
    json.Uint64(value("documents"));
    json.Key("epoch");
    json.Uint64(value("epoch"));
    if (st.config.sources[s].format == planner::source_format::webdataset) {
      json.Key("images");
      json.Uint64(value("images"));
      json.Key("image_patches");
      json.Uint64(value("image_patches"));
      json.Key("truncated_captions");
      json.Uint64(value("truncated_captions"));
    }
    json.Key("skipped");
    json.StartObject();
    for (const auto& [key, count] : slot.stats)
      if (key.rfind("skipped_", 0) == 0) {
        json.Key(key.substr(8).c_str());
        json.Uint64(count);
      }
    json.EndObject();
    json.EndObject();
  }
  json.EndObject();

  json.Key("ranks");
  json.StartArray();
  for (uint32_t r = 0; r < st.ranks.size(); ++r) {
    const auto& slot = st.ranks[r];
    json.StartObject();
    json.Key("rank");
    json.Uint(r);
    json.Key("node");
    json.String(slot.node.c_str());
    json.Key("endpoint");
    json.String(slot.endpoint.c_str());
    json.Key("shadow_node");
    json.String(slot.shadow_node.c_str());
    json.Key("shadow_endpoint");
    json.String(slot.shadow_endpoint.c_str());
    json.Key("step");
    json.Int64(slot.served + 1);
    json.EndObject();
  }
  json.EndArray();

  json.Key("imbalance");
  json.Double(st.last_imbalance);
  json.Key("imbalance_mean");
  json.Double(st.planned_steps ? st.imbalance_sum / st.planned_steps : 1.0);
  json.Key("imbalance_max");
  json.Double(st.max_imbalance);
  json.Key("planned_steps");
  json.Uint64(st.planned_steps);
  json.Key("padding_fraction");
  json.Double(st.planned_steps
                  ? st.padding_tokens /
                        (static_cast<double>(st.planned_steps) *
                         st.config.tokens_per_step())
                  : 0.0);
  json.Key("failovers");
  json.Uint64(st.failovers);
  json.Key("checkpoint");
  json.StartObject();
  json.Key("directory");
  json.String(st.store ? st.store->directory().c_str() : "");
  json.Key("last_snapshot_step");
  json.Int64(st.last_snapshot_step);
  json.Key("snapshot_bytes");
  json.Uint64(st.snapshot_bytes);
  json.Key("snapshot_ms");
  json.Double(st.snapshot_ms);
  json.Key("delta_bytes");
  json.Uint64(st.delta_bytes);
  json.Key("delta_ms_mean");
  json.Double(st.deltas_written ? st.delta_ms_total / st.deltas_written : 0.0);
  json.EndObject();
  json.Key("weight_changes");
  json.StartArray();
  for (const auto& change : st.weight_changes) {
    json.StartObject();
    json.Key("from_step");
    json.Uint64(change.from_step);
    json.Key("weights");
    json.StartObject();
    for (uint32_t s = 0; s < st.sources.size(); ++s) {
      json.Key(source_name(self, s).c_str());
      json.Double(change.weights[s]);
    }
    json.EndObject();
    json.Key("set_sources");
    json.StartArray();
    for (uint32_t s = 0; s < st.sources.size(); ++s)
      if (change.named.empty() || change.named[s])
        json.String(source_name(self, s).c_str());
    json.EndArray();
    json.EndObject();
  }
  json.EndArray();
  json.EndObject();
  return text.GetString();
}

// Returns the planner's view of every pool for an autoscaling decision.
std::vector<planner::pool_observation> observe_pools(planner_actor* self) {
  auto& st = self->state;
  std::vector<planner::pool_observation> pools;
  for (uint32_t s = 0; s < st.sources.size(); ++s) {
    const auto& slot = st.sources[s];
    planner::pool_observation pool;
    pool.node = slot.node;
    pool.workers = slot.workers > 0 ? slot.workers : st.config.sources[s].workers;
    auto latency = slot.stats.find("latency_us");
    pool.latency_us = latency == slot.stats.end() ? 0 : latency->second;
    if (slot.announced_documents > 0)
      pool.mean_tokens = static_cast<double>(slot.announced_tokens) /
                         slot.announced_documents;
    pools.push_back(pool);
  }
  return pools;
}

// Decides on `demand`, sends each resized pool its new size and returns
// whether any pool was resized.
bool decide_and_resize(planner_actor* self,
                       const std::vector<planner::pool_observation>& pools,
                       const planner::demand_observation& demand) {
  auto& st = self->state;
  std::map<std::string, int> budget;
  for (const auto& [id, node] : st.nodes)
    if (node.alive && node.loads())
      budget[id] = st.config.autoscale.cpu_budget > 0
                       ? st.config.autoscale.cpu_budget
                       : std::max<int>(1, static_cast<int>(node.info.cores));

  auto decisions = st.scaler->decide(
      pools, demand,
      [&](uint64_t step) { return st.steps->weights_at(step); }, budget);
  bool resized = false;
  for (const auto& d : decisions) {
    auto& slot = st.sources[d.source];
    if (!slot.pool)
      continue;
    st.log->info("source={} autoscale workers {} -> {}: {}",
                 source_name(self, d.source), d.from, d.to, d.reason);
    slot.workers = d.to;
    slot.scaled = std::to_string(d.from) + " -> " + std::to_string(d.to) +
                  " at step " + std::to_string(demand.next_step) + ": " +
                  d.reason;
    st.scaling_decisions++;
    metrics::record_autoscale(source_name(self, d.source), d.from, d.to);
    self->send(slot.pool, resize_atom::value, static_cast<int32_t>(d.to));
    resized = true;
  }
  return resized;
}

// Returns the seconds planning has waited for a dry source while ranks
// had room, up to `now`.
double blocked_seconds(planner_actor* self, clock_type::time_point now) {
  auto& st = self->state;
  double blocked = st.blocked_seconds;
  if (st.blocked)
    blocked += std::chrono::duration<double>(now - st.blocked_since).count();
  return blocked;
}

// Sizes starved pools for what the pools supply now while no consumption
// rate above zero is measured, since there is no demand to size them for
// yet. It applies when planning waits for a dry source now, has waited at
// least one interval in all, and has waited for at least half the time
// since work was assigned. Planning then counts as blocked 90% of the time.
// Pools are resized this way at most once per interval. With `defer`, a
// call that comes too early schedules one more check for when it will not
// be, so that a pool's first service time does not wait for the next
// periodic decision.
void scale_from_supply(planner_actor* self, bool defer = false) {
  auto& st = self->state;
  if (!st.scaler || !st.assigned || st.steps_per_s > 0 || !st.blocked)
    return;
  const auto now = self->clock().now();
  const double interval_s = st.config.autoscale.interval_ms / 1000.0;
  const double blocked = blocked_seconds(self, now);
  const double assigned_s =
      std::chrono::duration<double>(now - st.assigned_at).count();
  if (blocked < 0.5 * assigned_s)
    return;
  const double since_resize =
      st.supply_decided_at
          ? std::chrono::duration<double>(now - *st.supply_decided_at).count()
          : interval_s;
  const double early_s =
      std::max(interval_s - blocked, interval_s - since_resize);
  if (early_s > 0) {
    if (defer && !st.supply_check_pending) {
      // Rounded up, so that the check does not come a nanosecond early.
      st.supply_check_pending = true;
      self->delayed_send(self,
                         std::chrono::ceil<caf::timespan>(
                             std::chrono::duration<double>(early_s)),
                         supply_check_atom::value);
    }
    return;
  }
  auto pools = observe_pools(self);
  planner::demand_observation demand;
  demand.next_step = st.steps->next_step();
  demand.steps_per_s = planner::autoscaler::supply_steps_per_s(
      st.config, st.steps->weights_at(demand.next_step), pools);
  demand.blocked_fraction = 1;
  demand.before_first_rate = true;
  if (decide_and_resize(self, pools, demand))
    st.supply_decided_at = now;
}

// Measures consumption and pool latency, and resizes pools whose workers
// would fall behind (or idle) at the weights now and just ahead.
void autoscale(planner_actor* self) {
  auto& st = self->state;
  if (!st.scaler || !st.assigned)
    return;
  // The actor clock, so that tests can drive time.
  auto now = self->clock().now();
  int64_t slowest = std::numeric_limits<int64_t>::max();
  for (const auto& rank : st.ranks)
    slowest = std::min(slowest, rank.served);
  const double blocked = blocked_seconds(self, now);

  // One decision per interval: from the supply until a rate is measured,
  // from the rate after.
  if (st.rate_served < 0 || slowest < st.rate_served) {
    st.rate_served = slowest;
    st.rate_time = now;
    st.blocked_seconds_seen = blocked;
    scale_from_supply(self);
    return;
  }
  double seconds = std::chrono::duration<double>(now - st.rate_time).count();
  if (seconds <= 0)
    return;
  planner::demand_observation demand;
  demand.next_step = st.steps->next_step();
  double rate = (slowest - st.rate_served) / seconds;
  // Half the weight on the newest interval: quick to follow a change,
  // steady under one noisy interval.
  st.steps_per_s = st.steps_per_s == 0 ? rate : 0.5 * st.steps_per_s + 0.5 * rate;
  demand.steps_per_s = st.steps_per_s;
  demand.blocked_fraction = (blocked - st.blocked_seconds_seen) / seconds;
  st.rate_served = slowest;
  st.rate_time = now;
  st.blocked_seconds_seen = blocked;
  if (st.steps_per_s > 0)
    decide_and_resize(self, observe_pools(self), demand);
  else
    scale_from_supply(self);
}

void refresh_stats(planner_actor* self) {
  auto& st = self->state;
  for (uint32_t source = 0; source < st.sources.size(); ++source) {
    auto pool = st.sources[source].pool;
    if (!pool)
      continue;
    self->request(pool, stats_timeout, stats_atom::value)
        .then(
            [=](counters& stats) {
              auto& slot = self->state.sources[source];
              if (slot.pool != pool)
                return;
              auto now = clock_type::now();
              uint64_t documents = stats["documents"];
              // Over at least a second: the liveness tick and the
              // autoscaler both ask for stats, often a moment apart, and
              // pools deliver documents a read at a time.
              const double seconds =
                  std::chrono::duration<double>(now - slot.last_stats).count();
              if (slot.last_stats == clock_type::time_point{} ||
                  documents < slot.last_documents) {
                slot.last_documents = documents;
                slot.last_stats = now;
              } else if (seconds >= 1.0) {
                slot.docs_per_s = (documents - slot.last_documents) / seconds;
                slot.last_documents = documents;
                slot.last_stats = now;
              }
              const bool first_latency = slot.stats["latency_us"] == 0 &&
                                         stats["latency_us"] > 0;
              slot.stats = std::move(stats);
              // A starved pool need not wait for the next decision to grow.
              if (first_latency)
                scale_from_supply(self, true);
            },
            [](caf::error&) {
              // A pool without a reply keeps its last figures. Heartbeats,
              // not this request, decide whether its node is alive.
            });
  }
}

caf::result<uint64_t> set_weights(
    planner_actor* self,
    const std::vector<std::pair<std::string, double>>& changes) {
  auto& st = self->state;
  auto weights = st.steps->weights_at(st.steps->next_step());
  std::vector<bool> named(weights.size(), false);
  for (const auto& [name, weight] : changes) {
    auto found = std::find_if(
        st.config.sources.begin(), st.config.sources.end(),
        [&](const planner::source_config& s) { return s.name == name; });
    if (found == st.config.sources.end())
      return caf::make_error(caf::sec::invalid_argument,
                             "unknown source '" + name +
                                 "'; overlordctl status lists the sources");
    if (!(weight >= 0) || !std::isfinite(weight))
      return caf::make_error(caf::sec::invalid_argument,
                             "weight of '" + name +
                                 "' must be a finite number >= 0");
    weights[found - st.config.sources.begin()] = weight;
    named[found - st.config.sources.begin()] = true;
  }
  // Schedules go on after the change, so a later step could be left with
  // no weight at all, which would stop the job there.
  if (auto step = st.steps->first_step_without_weight(weights, named))
    return caf::make_error(
        caf::sec::invalid_argument,
        "with these weights every source would have weight zero at step " +
            std::to_string(*step) +
            " (the weight schedules go on); keep one source positive there");

  uint64_t from_step = st.steps->next_step();
  const checkpoint::weight_change change{from_step, weights, named};
  if (st.store) {
    // Recorded before it takes effect, so a resume replays it too.
    checkpoint::delta_record record;
    record.weights = change;
    try {
      st.store->append_delta(checkpoint::encode_delta(record));
    } catch (const error& e) {
      return caf::make_error(caf::sec::runtime_error,
                             std::string("weights not changed: ") + e.what());
    }
  }
  apply_weights(self, change);
  plan_ahead(self);
  return from_step;
}

// Sets `logger` to `level` on node `node_id`, or on the planner's process
// and every running node when `node_id` is empty. Replies once every node
// has replied, naming the nodes, or fails naming those that did not.
caf::result<std::string> set_log_levels(planner_actor* self,
                                        const std::string& node_id,
                                        const std::string& logger,
                                        const std::string& level) {
  auto& st = self->state;
  try {
    check_logger_level(logger, level);
  } catch (const error& e) {
    return caf::make_error(caf::sec::invalid_argument, std::string(e.what()));
  }
  std::vector<std::string> targets;
  for (const auto& [id, node] : st.nodes)
    if (node.alive && (node_id.empty() || id == node_id))
      targets.push_back(id);
  if (!node_id.empty() && targets.empty())
    return caf::make_error(caf::sec::invalid_argument,
                           "no running node with id " + node_id +
                               "; overlordctl status lists the nodes");
  st.log->info("logger={} level={} requested for {}", logger, level,
               node_id.empty() ? "the planner and every node"
                               : "node=" + node_id);
  auto reached = std::make_shared<std::vector<std::string>>();
  auto failures = std::make_shared<std::vector<std::string>>();
  if (node_id.empty()) {
    set_logger_level(logger, level);
    reached->push_back("the planner");
  }
  // Joins the names with ", ", the planner first and the nodes sorted, so
  // the reply does not depend on the order in which the nodes reply.
  auto list = [](std::vector<std::string> items) {
    auto nodes_begin = items.begin();
    if (!items.empty() && items.front() == "the planner")
      ++nodes_begin;
    std::sort(nodes_begin, items.end());
    std::string out;
    for (const auto& item : items)
      out += (out.empty() ? "" : ", ") + item;
    return out.empty() ? std::string("no node") : out;
  };
  auto summary = [=] {
    std::string text = "logger " + logger + " set to " + level + " on " +
                       list(*reached);
    if (!failures->empty())
      text += "; failed on " + list(*failures) + "; retry those nodes";
    return text;
  };
  if (targets.empty())
    return summary();

  auto promise = self->make_response_promise();
  auto pending = std::make_shared<size_t>(targets.size());
  auto finish = [=]() mutable {
    if (--*pending > 0)
      return;
    if (failures->empty())
      promise.deliver(summary());
    else
      promise.deliver(caf::make_error(caf::sec::runtime_error, summary()));
  };
  for (const auto& id : targets)
    self->request(st.nodes[id].agent, std::chrono::seconds(5),
                  log_level_atom::value, logger, level)
        .then(
            [=](std::string& levels) mutable {
              self->state.nodes[id].log_levels = levels;
              reached->push_back("node=" + id);
              finish();
            },
            [=](caf::error& err) mutable {
              failures->push_back("node=" + id + " (" +
                                  self->system().render(err) + ")");
              finish();
            });
  return promise;
}

// ---- Behaviour -----------------------------------------------------------

// Restores the snapshot in `plan` and arranges the replay to its resume
// step: pools start at the snapshot's positions, plans before the resume step
// are rebuilt but not sent, and every rank starts at the resume step.
void restore_from(planner_actor* self, const checkpoint::restore_plan& plan) {
  auto& st = self->state;
  const auto& snapshot = plan.snapshot;
  planner::planner_state saved;
  saved.next_step = snapshot.step;
  saved.weights = snapshot.weights;
  saved.weights_from_step = snapshot.weights_from_step;
  saved.weights_from_steps = snapshot.weights_from_steps;
  saved.mixture_weights = snapshot.mixture_weights;
  saved.total_drawn = snapshot.total_drawn;
  saved.carried = snapshot.carried;
  for (const auto& cursor : snapshot.sources) {
    saved.drawn.push_back(cursor.drawn);
    saved.next_unplanned.push_back(cursor.announce_from);
  }
  st.steps->restore(saved);
  for (uint32_t source = 0; source < snapshot.sources.size(); ++source) {
    const auto& cursor = snapshot.sources[source];
    st.restored_starts[source] =
        stream_position{cursor.first_sequence, cursor.epoch,
                        cursor.shard_position, cursor.record,
                        cursor.announce_from};
  }
  st.pending_weights = plan.weight_changes;
  st.logged_steps = plan.step_deltas;
  st.replay_until = plan.resume_step;
  st.last_snapshot_step = static_cast<int64_t>(snapshot.step);
  for (auto& rank : st.ranks)
    rank.served = static_cast<int64_t>(plan.resume_step) - 1;
  st.released = static_cast<int64_t>(plan.resume_step) - 1;
  st.log->info("restored {} (step={}); replaying to step={}{}",
               plan.snapshot_path, snapshot.step, plan.resume_step,
               plan.torn_tail ? "; the delta log ended in a partial record "
                                "from a crash, which was ignored"
                              : "");
}

// Returns why `rank` cannot be looked up (unknown rank, or no constructor
// yet, which is worth retrying), or nothing when it can.
std::optional<caf::error> lookup_problem(planner_actor* self, uint32_t rank) {
  auto& s = self->state;
  if (rank >= s.ranks.size())
    return caf::make_error(caf::sec::invalid_argument,
                           "rank " + std::to_string(rank) +
                               " does not exist; the job has " +
                               std::to_string(s.ranks.size()) + " ranks");
  if (s.ranks[rank].endpoint.empty())
    return caf::make_error(caf::sec::runtime_error,
                           "rank " + std::to_string(rank) +
                               " has no constructor yet; retry shortly");
  return std::nullopt;
}

// Ends a recovery: resumes at the step after the slowest reported rank's
// last held step (or the newest snapshot when no rank was reported), and
// adopts the reported constructors, which kept serving meanwhile.
void finish_recovery(planner_actor* self) {
  auto& st = self->state;
  st.recovering = false;
  uint64_t resume_step = UINT64_MAX;
  for (const auto& [rank, entry] : st.adopted_primaries)
    resume_step = std::min(resume_step,
                           static_cast<uint64_t>(entry.second.served + 1));
  try {
    if (resume_step == UINT64_MAX) {
      auto newest = st.store->load_snapshot(UINT64_MAX);
      resume_step = newest ? newest->step : 0;
    }
    auto plan = checkpoint::prepare_restore(*st.store, st.config, resume_step);
    st.store->rewrite_deltas(plan.kept_records);
    restore_from(self, plan);
  } catch (const error& e) {
    st.log->error("recovery failed: {}", e.what());
    self->send(st.supervisor, fatal_atom::value,
               std::string("recovery failed: ") + e.what());
    return;
  }
  for (const auto& [rank, entry] : st.adopted_primaries) {
    if (rank >= st.ranks.size())
      continue;
    auto& slot = st.ranks[rank];
    slot.constructor = entry.second.constructor;
    slot.endpoint = entry.second.endpoint;
    slot.node = entry.first;
    slot.served = std::max(slot.served, entry.second.served);
  }
  for (const auto& [rank, entry] : st.adopted_shadows) {
    if (rank >= st.ranks.size() || entry.first == st.ranks[rank].node)
      continue;
    auto& slot = st.ranks[rank];
    slot.shadow = entry.second.constructor;
    slot.shadow_endpoint = entry.second.endpoint;
    slot.shadow_node = entry.first;
  }
  st.log->info("recovered: {} constructors adopted, resuming at step={}",
               st.adopted_primaries.size() + st.adopted_shadows.size(),
               resume_step);
  st.assigned = true;
  st.assigned_at = self->clock().now();
  maybe_assign(self);
  plan_ahead(self);
}

caf::behavior planner_behavior(planner_actor* self, planner_setup setup) {
  auto& st = self->state;
  st.config = std::move(setup.config);
  st.pad_id = setup.pad_id;
  st.supervisor = std::move(setup.supervisor);
  st.steps = std::make_unique<planner::step_planner>(st.config);
  if (st.config.autoscale.enabled)
    st.scaler = std::make_unique<planner::autoscaler>(st.config);
  st.sources.resize(st.config.sources.size());
  metrics::start_failover_counters();
  st.ranks.resize(st.config.ranks);
  st.positions.resize(st.config.sources.size());
  st.log = get_logger("planner");
  st.store = std::move(setup.store);
  st.restored_starts.resize(st.config.sources.size());
  if (setup.restore)
    restore_from(self, *setup.restore);
  if (setup.recover) {
    st.recovering = true;
    st.recovered_job = true;
    st.recover_started = clock_type::now();
    st.log->info("recovering: waiting up to {} ms for nodes to report their "
                 "constructors",
                 st.config.node_timeout_ms);
  }
  st.log->info("planner started: {} sources, {} ranks x {} rows of {} tokens "
               "(row length {}), mix_by {}, balancer {}, seed {}; waiting for "
               "{} loader and {} constructor nodes",
               st.sources.size(), st.config.ranks, st.config.rows_per_rank,
               st.config.shortest_length(), st.config.describe_lengths(),
               planner::to_string(st.config.mix_by),
               planner::to_string(st.config.balancer), st.config.seed,
               st.config.loader_nodes, st.config.constructor_nodes);

  self->set_down_handler([=](caf::down_msg& down) {
    auto& s = self->state;
    for (auto& [id, node] : s.nodes)
      if (node.agent.address() == down.source) {
        retire_node(self, id,
                    "connection lost (" + self->system().render(down.reason) +
                        ")");
        return;
      }
  });
  self->send(self, tick_atom::value);
  if (st.scaler)
    self->delayed_send(self,
                       std::chrono::milliseconds(st.config.autoscale.interval_ms),
                       scale_atom::value);

  return {
      [=](join_atom, node_info& info) -> caf::result<planner::job_config> {
        auto& s = self->state;
        auto existing = s.nodes.find(info.id);
        auto sender = caf::actor_cast<caf::actor>(self->current_sender());
        // A join can arrive without a sender, as seen while several nodes
        // connected at once. No reply can reach that node, and it sends its
        // join again after a timeout.
        if (!sender) {
          s.log->warn("node={} role={} sent a join request without a "
                      "reachable sender (its link may not be set up yet); "
                      "ignoring it until the node sends it again",
                      info.id, info.role);
          return caf::make_error(caf::sec::invalid_argument,
                                 "join request without a sender");
        }
        // A repeated join from the same agent means its first reply was lost.
        if (existing != s.nodes.end() && existing->second.alive &&
            existing->second.agent == sender) {
          s.log->warn("node={} sent its join request again; answering it "
                      "again", info.id);
          return s.config;
        }
        if (existing != s.nodes.end() && existing->second.alive)
          return caf::make_error(caf::sec::invalid_argument,
                                 "a node with id " + info.id +
                                     " is already in the job; give each "
                                     "node its own --node-id");
        // A node whose payload and batch sockets differ from the others'
        // would fail every handshake, and only once it takes over work.
        if (info.role != "all") {
          if (s.curve && *s.curve != info.curve) {
            s.log->warn("node={} role={} rejected: it {} CURVE and the "
                        "job's other nodes {}",
                        info.id, info.role, info.curve ? "uses" : "does not use",
                        *s.curve ? "do" : "do not");
            return caf::make_error(
                caf::sec::invalid_argument,
                std::string("this node ") +
                    (info.curve ? "uses" : "does not use") +
                    " CURVE and the job's other nodes " +
                    (*s.curve ? "do" : "do not") +
                    "; start every loader and constructor node with the "
                    "same --curve-* flags");
          }
          s.curve = info.curve;
        }
        node_entry entry;
        entry.info = info;
        entry.agent = sender;
        entry.last_seen = clock_type::now();
        entry.join_order = s.joins++;
        self->monitor(entry.agent);
        s.log->info("node={} role={} pid={} address={} joined{}", info.id,
                    info.role, info.pid, info.address,
                    s.assigned ? " (late: kept as a spare)" : "");
        s.nodes[info.id] = std::move(entry);
        // Assign after this reply is out, so the node has the plane first.
        self->send(self, assign_atom::value);
        return s.config;
      },
      [=](assign_atom) {
        maybe_assign(self);
        plan_ahead(self);
      },
      [=](rejoin_atom, const std::string& id, std::vector<rank_asset>& assets) {
        auto& s = self->state;
        if (!s.recovering) {
          // Work was assigned already: constructors this node still runs
          // are not needed.
          for (auto& asset : assets)
            self->send(asset.constructor, leave_atom::value);
          return;
        }
        for (auto& asset : assets) {
          s.log->info("node={} still runs the {} of rank={} (step {})", id,
                      asset.shadow ? "shadow" : "constructor", asset.rank,
                      asset.served + 1);
          auto& table = asset.shadow ? s.adopted_shadows : s.adopted_primaries;
          table[asset.rank] = {id, asset};
        }
        if (s.adopted_primaries.size() == s.ranks.size())
          finish_recovery(self);
      },
      [=](heartbeat_atom, const std::string& id) {
        auto found = self->state.nodes.find(id);
        if (found != self->state.nodes.end() && found->second.alive)
          found->second.last_seen = clock_type::now();
      },
      [=](tick_atom) {
        auto& s = self->state;
        auto now = clock_type::now();
        auto timeout = std::chrono::milliseconds(s.config.node_timeout_ms);
        std::vector<std::string> silent;
        for (const auto& [id, node] : s.nodes)
          if (node.alive && now - node.last_seen > timeout)
            silent.push_back(id);
        for (const auto& id : silent)
          retire_node(self, id,
                      "no heartbeat for " +
                          std::to_string(s.config.node_timeout_ms) + " ms");
        if (s.recovering && now - s.recover_started > timeout)
          finish_recovery(self);
        maybe_assign(self);
        plan_ahead(self);
        refresh_stats(self);
        self->delayed_send(self, tick_interval, tick_atom::value);
      },
      [=](supply_check_atom) {
        self->state.supply_check_pending = false;
        scale_from_supply(self, true);
      },
      [=](scale_atom) {
        auto& s = self->state;
        refresh_stats(self);
        autoscale(self);
        self->delayed_send(
            self, std::chrono::milliseconds(s.config.autoscale.interval_ms),
            scale_atom::value);
      },
      [=](served_atom, uint32_t rank, uint64_t step) {
        auto& s = self->state;
        if (rank >= s.ranks.size())
          return;
        // Only the rank's constructor or its shadow (which serves trainers
        // that failed over to it) counts. A replaced one that is still
        // running must not move the window.
        auto sender = self->current_sender();
        auto& slot = s.ranks[rank];
        bool from_primary = slot.constructor && sender == slot.constructor.address();
        bool from_shadow = slot.shadow && sender == slot.shadow.address();
        if (!from_primary && !from_shadow)
          return;
        if (from_shadow) {
          // The trainers moved to the shadow while the primary still runs
          // (it was slow or cut off): swap the roles, so the old primary
          // waits in standby with the plans instead of building released steps.
          std::swap(slot.constructor, slot.shadow);
          std::swap(slot.node, slot.shadow_node);
          std::swap(slot.endpoint, slot.shadow_endpoint);
          self->send(slot.shadow, demote_atom::value);
          s.failovers++;
          metrics::record_failover("shadow_promote");
          s.log->warn("rank={} trainers moved to the shadow on node={}; it is "
                      "the primary now, and node={} stands by",
                      rank, slot.node, slot.shadow_node);
        }
        auto& served = s.ranks[rank].served;
        served = std::max(served, static_cast<int64_t>(step));
        if (s.ranks[rank].shadow)
          self->send(s.ranks[rank].shadow, served_atom::value,
                     static_cast<uint64_t>(served));
        int64_t all = std::numeric_limits<int64_t>::max();
        for (const auto& slot : s.ranks)
          all = std::min(all, slot.served);
        release_up_to(self, all);
        plan_ahead(self);
      },
      [=](status_atom) { return status_json(self); },
      [=](lookup_atom,
          uint32_t rank) -> caf::result<std::string, std::string> {
        if (auto problem = lookup_problem(self, rank))
          return *problem;
        const auto& slot = self->state.ranks[rank];
        return {slot.endpoint, slot.node};
      },
      [=](endpoints_atom, uint32_t rank)
          -> caf::result<std::vector<std::string>, std::vector<std::string>> {
        if (auto problem = lookup_problem(self, rank))
          return *problem;
        const auto& slot = self->state.ranks[rank];
        std::vector<std::string> endpoints{slot.endpoint};
        std::vector<std::string> nodes{slot.node};
        if (!slot.shadow_endpoint.empty()) {
          endpoints.push_back(slot.shadow_endpoint);
          nodes.push_back(slot.shadow_node);
        }
        return {endpoints, nodes};
      },
      [=](set_weights_atom,
          const std::vector<std::pair<std::string, double>>& changes) {
        return set_weights(self, changes);
      },
      [=](log_level_atom, const std::string& node_id, const std::string& logger,
          const std::string& level) {
        return set_log_levels(self, node_id, logger, level);
      },
      [=](log_level_atom, const std::string& id, const std::string& levels) {
        auto found = self->state.nodes.find(id);
        if (found != self->state.nodes.end())
          found->second.log_levels = levels;
      },
      [=](bye_atom, const std::string& id) {
        // Only the node's own agent may report that the node is leaving.
        auto& s = self->state;
        auto found = s.nodes.find(id);
        if (found == s.nodes.end() ||
            caf::actor_cast<caf::actor_addr>(self->current_sender()) !=
                found->second.agent.address()) {
          s.log->warn("node={} ignored a bye that did not come from the "
                      "node's own agent",
                      id);
          return false;
        }
        retire_node(self, id, "it shut down", true);
        return true;
      },
      [=](drain_atom, const std::string& id) -> caf::result<std::string> {
        auto& s = self->state;
        auto found = s.nodes.find(id);
        if (found == s.nodes.end() || !found->second.alive)
          return caf::make_error(caf::sec::invalid_argument,
                                 "no running node with id " + id +
                                     "; overlordctl status lists the nodes");
        found->second.draining = true;
        s.log->info("node={} draining on request", id);
        self->send(found->second.agent, leave_atom::value);
        // Planned: logged at info, and the node has its leave_atom already.
        retire_node(self, id, "drained", true);
        return "node " + id + " drained; its work moves to other nodes";
      },
  };
}

}  // namespace

caf::actor spawn_planner(caf::actor_system& system, planner_setup setup) {
  return system.spawn(planner_behavior, std::move(setup));
}

}  // namespace overlord::actors
