#include "common/job_metrics.hpp"

#include <map>
#include <mutex>

namespace overlord::metrics {

namespace {

// Bucket upper bounds, in seconds or as ratios. On the demo corpora a
// document takes from tens of microseconds to tens of milliseconds, and
// the bounds leave room on both sides.
const std::vector<double> document_seconds_bounds = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
const std::vector<double> wait_seconds_bounds = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
const std::vector<double> imbalance_bounds = {1.0, 1.01, 1.02, 1.05, 1.1,
                                              1.2, 1.5,  2.0,  3.0};
const std::vector<double> checkpoint_seconds_bounds = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};

registry& reg() { return process_registry(); }

std::string rank_label(uint32_t rank) { return std::to_string(rank); }

}  // namespace

void record_node(const std::string& node, const std::string& role) {
  reg().get_gauge("overlord_node_info",
                  "Always 1; labels name this process's node id and role.",
                  {{"node", node}, {"role", role}})
      .set(1);
}

void record_health(bool healthy) {
  reg().get_gauge("overlord_node_healthy",
                  "1 while /healthz returns 200: the node joined the "
                  "planner (or the planner listens) and is working.")
      .set(healthy ? 1 : 0);
}

source_series& series_of_source(const std::string& source) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<source_series>> cache;
  std::lock_guard<std::mutex> guard(mutex);
  auto& slot = cache[source];
  if (!slot) {
    label_set labels{{"source", source}};
    slot.reset(new source_series{
        reg().get_counter("overlord_source_documents_total",
                          "Documents read and tokenized by this node's "
                          "workers.",
                          labels),
        reg().get_counter("overlord_source_bytes_total",
                          "Text bytes of the documents read and tokenized.",
                          labels),
        reg().get_counter("overlord_source_tokens_total",
                          "Tokens produced, end-of-text tokens included.",
                          labels),
        reg().get_histogram("overlord_source_document_seconds",
                            "Worker time per document: its share of the "
                            "shard's read time plus its tokenization.",
                            document_seconds_bounds, labels)});
  }
  return *slot;
}

namespace {

counter& bad_input(const std::string& source, const std::string& kind) {
  return reg().get_counter("overlord_source_bad_input_total",
                           "Records skipped or repaired as bad input, by "
                           "kind.",
                           {{"source", source}, {"kind", kind}});
}

}  // namespace

void record_bad_input(const std::string& source, const std::string& kind) {
  bad_input(source, kind).add();
}

void start_bad_input_counters(const std::string& source,
                              const std::vector<std::string>& kinds) {
  for (const auto& kind : kinds)
    bad_input(source, kind);
}

void record_source_workers(const std::string& source, int workers) {
  reg().get_gauge("overlord_source_workers",
                  "Worker actors reading and tokenizing the source here.",
                  {{"source", source}})
      .set(workers);
}

void record_source_buffer(const std::string& source, uint64_t documents,
                          uint64_t bytes, uint64_t held_bytes) {
  label_set labels{{"source", source}};
  reg().get_gauge("overlord_source_buffered_documents",
                  "Documents tokenized and not yet announced to the "
                  "planner: up to buffer_documents plus the documents of "
                  "the shards in flight.",
                  labels)
      .set(static_cast<double>(documents));
  reg().get_gauge("overlord_source_buffered_bytes",
                  "Token bytes of the buffered documents.", labels)
      .set(static_cast<double>(bytes));
  reg().get_gauge("overlord_source_held_bytes",
                  "Token bytes the pool holds in memory: buffered "
                  "documents plus announced ones not yet released.",
                  labels)
      .set(static_cast<double>(held_bytes));
}

void record_rank_step(uint32_t rank, int64_t step) {
  reg().get_gauge("overlord_rank_step",
                  "The step the rank's trainers need next.",
                  {{"rank", rank_label(rank)}})
      .set(static_cast<double>(step));
}

void record_batch_served(uint32_t rank) {
  reg().get_counter("overlord_rank_batches_served_total",
                    "Batches sent to the rank's trainers (one per "
                    "context-parallel slice).",
                    {{"rank", rank_label(rank)}})
      .add();
}

void record_prefetch_depth(uint32_t rank, uint64_t outstanding) {
  reg().get_gauge("overlord_rank_prefetch_depth",
                  "Trainer requests waiting for steps not built yet.",
                  {{"rank", rank_label(rank)}})
      .set(static_cast<double>(outstanding));
}

void record_rank_wait(uint32_t rank, double seconds) {
  reg().get_histogram("overlord_rank_wait_seconds",
                      "Time a trainer request waited for a batch that was "
                      "not built when it arrived; _sum is the total wait.",
                      wait_seconds_bounds, {{"rank", rank_label(rank)}})
      .observe(seconds);
}

namespace {

counter& fetch_retries(uint32_t rank) {
  return reg().get_counter("overlord_rank_fetch_retries_total",
                           "Payload fetches that failed or timed out and "
                           "were sent again.",
                           {{"rank", rank_label(rank)}});
}

counter& failovers(const std::string& kind) {
  return reg().get_counter(
      "overlord_failovers_total",
      "Work moved after a node was lost or drained: loader (a pool "
      "restarted elsewhere), constructor (a rank restarted elsewhere), "
      "shadow_promote (a shadow became the primary).",
      {{"kind", kind}});
}

}  // namespace

void record_fetch_retry(uint32_t rank) { fetch_retries(rank).add(); }

void start_rank_counters(uint32_t rank) { fetch_retries(rank); }

void record_planned_step(uint64_t step, double imbalance) {
  reg().get_counter("overlord_planner_steps_total", "Steps planned and sent.")
      .add();
  reg().get_gauge("overlord_planner_next_step",
                  "The next step the planner will plan.")
      .set(static_cast<double>(step + 1));
  reg().get_gauge("overlord_planner_imbalance",
                  "Max over mean modelled rank cost of the last planned "
                  "step; 1 is perfect balance.")
      .set(imbalance);
  reg().get_histogram("overlord_planner_step_imbalance",
                      "Max over mean modelled rank cost per planned step.",
                      imbalance_bounds)
      .observe(imbalance);
}

void record_autoscale(const std::string& source, int old_workers,
                      int new_workers) {
  if (new_workers == old_workers)
    return;
  const char* direction = new_workers > old_workers ? "up" : "down";
  reg().get_counter("overlord_autoscale_decisions_total",
                    "Autoscaler decisions that changed a source's workers.",
                    {{"source", source}, {"direction", direction}})
      .add();
  reg().get_gauge("overlord_autoscale_workers",
                  "Workers the autoscaler last chose for the source.",
                  {{"source", source}})
      .set(new_workers);
}

void record_failover(const std::string& kind) { failovers(kind).add(); }

void start_failover_counters() {
  for (const char* kind : {"loader", "constructor", "shadow_promote"})
    failovers(kind);
}

void record_checkpoint(const std::string& kind, uint64_t bytes,
                       double seconds) {
  label_set labels{{"kind", kind}};
  reg().get_gauge("overlord_checkpoint_last_bytes",
                  "Size of the last checkpoint record written.", labels)
      .set(static_cast<double>(bytes));
  reg().get_counter("overlord_checkpoint_written_bytes_total",
                    "Bytes of checkpoint records written.", labels)
      .add(static_cast<double>(bytes));
  reg().get_histogram("overlord_checkpoint_write_seconds",
                      "Time to write and sync one checkpoint record.",
                      checkpoint_seconds_bounds, labels)
      .observe(seconds);
}

}  // namespace overlord::metrics
