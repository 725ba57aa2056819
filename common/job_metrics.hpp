// The overlord_* series that an overlordd process exports at /metrics,
// with one-line update calls for the actors. A process exports only what
// it runs: a loader node has no rank series, a constructor node no source
// series, and only the planner's process has planner and checkpoint
// series. docs/operations.md lists every series with its meaning.
//
// Series are never removed while the process runs, so the handles below
// stay valid; a source or rank that moves to another node keeps its last
// values here, and Prometheus' `instance` label tells the nodes apart.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/metrics.hpp"

namespace overlord::metrics {

// Sets overlord_node_info{node,role} to 1.
void record_node(const std::string& node, const std::string& role);

// Sets overlord_node_healthy, which mirrors /healthz.
void record_health(bool healthy);

// ---- Sources (loader nodes) -------------------------------------------

// Handles for the series a source worker updates per document.
struct source_series {
  counter& documents;
  counter& bytes;
  counter& tokens;
  histogram& document_seconds;
};

source_series& series_of_source(const std::string& source);

// One skipped or repaired record of kind `kind` (the reader's kinds, such
// as malformed_json or empty, and invalid_utf8 for repaired text).
void record_bad_input(const std::string& source, const std::string& kind);
// Creates the source's bad-input counters of `kinds` at 0, so that
// increase() counts the first bad record of each kind.
void start_bad_input_counters(const std::string& source,
                              const std::vector<std::string>& kinds);

void record_source_workers(const std::string& source, int workers);

// Documents tokenized and not yet announced to the planner, the bytes of
// their tokens, and the bytes of every token the pool holds in memory.
void record_source_buffer(const std::string& source, uint64_t documents,
                          uint64_t bytes, uint64_t held_bytes);

// ---- Ranks (constructor nodes) ------------------------------------------

// The step a rank's trainers need next.
void record_rank_step(uint32_t rank, int64_t step);
void record_batch_served(uint32_t rank);
// Trainer requests this constructor holds for steps not built yet.
void record_prefetch_depth(uint32_t rank, uint64_t outstanding);
// Time a trainer request waited for a batch that was not built yet.
void record_rank_wait(uint32_t rank, double seconds);
void record_fetch_retry(uint32_t rank);
// Creates the rank's counters at 0, so that rate() and increase() see
// their first event.
void start_rank_counters(uint32_t rank);

// ---- Planner --------------------------------------------------------------

// A planned step with its imbalance (max/mean modelled rank cost).
void record_planned_step(uint64_t step, double imbalance);

// An autoscaler decision to change the workers of `source` from
// `old_workers` to `new_workers`. Counts overlord_autoscale_decisions_total
// {source, direction="up"|"down"} and sets overlord_autoscale_workers;
// a decision that keeps the count is not counted.
void record_autoscale(const std::string& source, int old_workers,
                      int new_workers);

// Work moved after a node loss or drain. `kind` is "loader" (a source
// pool restarted elsewhere), "constructor" (a rank restarted elsewhere)
// or "shadow_promote" (a shadow became a rank's primary).
void record_failover(const std::string& kind);
// Creates the failover counters of every kind at 0.
void start_failover_counters();

// A checkpoint record written: `kind` is "snapshot" or "delta".
void record_checkpoint(const std::string& kind, uint64_t bytes,
                       double seconds);

}  // namespace overlord::metrics
