#include "actors/planner_actor.hpp"

#include <algorithm>
#include <chrono>
#include <limits>

#include "actors/messages.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "planner/step_planner.hpp"

namespace overlord::actors {

namespace {

// Metadata is requested from a pool in batches of this many documents,
// and again whenever fewer than half a batch are queued.
constexpr uint32_t announce_batch = 512;

struct planner_state {
  static inline const char* name = "planner";

  planner::job_config config;
  std::vector<caf::actor> pools;
  caf::actor supervisor;
  std::unique_ptr<planner::step_planner> steps;
  std::vector<caf::actor> constructors;  // by rank; empty until registered
  std::vector<int64_t> served;           // last step each rank's trainer got
  std::vector<bool> announcing;          // a request to the pool is open
  std::shared_ptr<spdlog::logger> log;

  uint64_t planned_steps = 0;
  uint64_t padding_tokens = 0;
  uint64_t carried_pieces = 0;
  double last_imbalance = 1;
  double max_imbalance = 1;
  double imbalance_sum = 0;
  std::chrono::steady_clock::time_point started;
};

using planner_actor = caf::stateful_actor<planner_state>;

void plan_ahead(planner_actor* self);

void request_announcements(planner_actor* self, uint32_t source) {
  auto& st = self->state;
  if (st.announcing[source])
    return;
  st.announcing[source] = true;
  self->request(st.pools[source], caf::infinite, announce_atom::value,
                announce_batch)
      .then(
          [=](std::vector<planner::document_meta>& docs) {
            auto& s = self->state;
            s.announcing[source] = false;
            try {
              s.steps->add_documents(source, docs);
            } catch (const error& e) {
              s.log->error("{}", e.what());
              self->send(s.supervisor, fatal_atom::value,
                         std::string(e.what()));
              return;
            }
            plan_ahead(self);
          },
          [=](caf::error& err) {
            auto& s = self->state;
            s.announcing[source] = false;
            auto message = "source=" + s.config.sources[source].name +
                           " announcement failed: " +
                           self->system().render(err);
            s.log->error("{}", message);
            self->send(s.supervisor, fatal_atom::value, message);
          });
}

bool all_registered(const planner_state& st) {
  return std::all_of(st.constructors.begin(), st.constructors.end(),
                     [](const caf::actor& c) { return c != nullptr; });
}

void plan_ahead(planner_actor* self) {
  auto& st = self->state;
  if (!all_registered(st))
    return;

  int64_t oldest_needed = std::numeric_limits<int64_t>::max();
  for (auto step : st.served)
    oldest_needed = std::min(oldest_needed, step + 1);
  const int64_t limit = oldest_needed + st.config.plan_ahead;

  while (static_cast<int64_t>(st.steps->next_step()) < limit) {
    auto outcome = st.steps->plan_next();
    if (!outcome.plan) {
      request_announcements(self, *outcome.starved_source);
      break;
    }
    auto& plan = *outcome.plan;
    st.planned_steps++;
    st.padding_tokens += plan.padding_tokens;
    st.carried_pieces += plan.carried_pieces;
    st.last_imbalance = plan.imbalance;
    st.max_imbalance = std::max(st.max_imbalance, plan.imbalance);
    st.imbalance_sum += plan.imbalance;
    for (auto& rank_rows : plan.ranks)
      self->send(st.constructors[rank_rows.rank], plan_atom::value,
                 std::move(rank_rows));
    if (plan.step % 100 == 0)
      st.log->info(
          "step={} planned; padding {:.2f}% so far; rank cost max/mean "
          "{:.3f} this step, {:.3f} mean, {:.3f} worst",
          plan.step,
          100.0 * st.padding_tokens /
              (static_cast<double>(st.planned_steps) * st.config.global_rows() *
               st.config.sequence_length),
          plan.imbalance, st.imbalance_sum / st.planned_steps,
          st.max_imbalance);
  }

  // Keep every weighted source's queue topped up so that planning rarely
  // waits on a round trip.
  for (uint32_t source = 0; source < st.pools.size(); ++source)
    if (st.config.sources[source].weight > 0 &&
        st.steps->queued(source) < announce_batch / 2)
      request_announcements(self, source);
}

caf::behavior planner_behavior(planner_actor* self, planner_setup setup) {
  auto& st = self->state;
  st.config = std::move(setup.config);
  st.pools = std::move(setup.pools);
  st.supervisor = std::move(setup.supervisor);
  st.steps = std::make_unique<planner::step_planner>(st.config);
  st.constructors.resize(st.config.ranks);
  st.served.assign(st.config.ranks, -1);
  st.announcing.assign(st.pools.size(), false);
  st.log = get_logger("planner");
  st.started = std::chrono::steady_clock::now();
  st.log->info("planner started: {} sources, {} ranks x {} rows of {} tokens, "
               "mix_by {}, seed {}",
               st.pools.size(), st.config.ranks, st.config.rows_per_rank,
               st.config.sequence_length, planner::to_string(st.config.mix_by),
               st.config.seed);

  return {
      [=](register_atom, uint32_t rank, caf::actor constructor) {
        auto& s = self->state;
        if (rank >= s.constructors.size()) {
          s.log->error("rank={} registered but the job has {} ranks", rank,
                       s.constructors.size());
          return;
        }
        s.constructors[rank] = constructor;
        s.log->info("rank={} constructor registered", rank);
        plan_ahead(self);
      },
      [=](served_atom, uint32_t rank, uint64_t step) {
        auto& s = self->state;
        if (rank < s.served.size())
          s.served[rank] = std::max(s.served[rank], static_cast<int64_t>(step));
        plan_ahead(self);
      },
      [=](stats_atom) {
        auto& s = self->state;
        counters stats;
        stats["planned_steps"] = s.planned_steps;
        stats["padding_tokens"] = s.padding_tokens;
        stats["carried_pieces"] = s.carried_pieces;
        return stats;
      },
  };
}

}  // namespace

caf::actor spawn_planner(caf::actor_system& system, planner_setup setup) {
  return system.spawn(planner_behavior, std::move(setup));
}

}  // namespace overlord::actors
