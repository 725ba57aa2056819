// The declarative data plane: the YAML configuration of a job, checked and
// resolved. Every process of a job works from the same `job_config`, so it
// is a plain value that can be copied and compared.
#pragma once

#include <array>
#include <cstdint>
#include <set>
#include <string>

#include <utility>
#include <vector>

#include "planner/balancer.hpp"
#include "planner/schedule.hpp"

namespace overlord::planner {

// Values are appended, never reordered: checkpoints compare them.
enum class bad_input_policy { skip, fail, quarantine };
enum class mix_unit { tokens, documents };
enum class source_format { jsonl, text, indexed, webdataset };

struct source_config {
  std::string name;
  source_format format = source_format::text;
  // JSON Lines only: the string field that holds the document text.
  std::string text_field = "text";
  // WebDataset only: the string field of `.json` captions, and how images
  // are preprocessed (see sources/image.hpp). The mean and std defaults
  // are the RGB statistics OpenAI's CLIP normalises with.
  std::string caption_field = "caption";
  uint64_t image_max_pixels = 224 * 224;
  uint32_t patch_size = 14;
  std::array<float, 3> image_mean = {0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> image_std = {0.26862954f, 0.26130258f, 0.27577711f};
  // Globs as written in the config, and the files they matched (sorted,
  // absolute). The shard order of an epoch is a seeded shuffle of `shards`.
  // For indexed sources the globs match PREFIX.idx files and `shards`
  // contains the prefixes.
  std::vector<std::string> paths;
  std::vector<std::string> shards;
  // Relative mixture weight: only ratios between sources matter. A
  // constant weight is `weight`. Otherwise `weight_schedule` gives it per
  // step, and `weight` is its value at step 0.
  double weight = 1;
  step_schedule weight_schedule;

  double weight_at(uint64_t step) const {
    return weight_schedule.kind == step_schedule::shape::constant
               ? weight
               : weight_schedule.at(step);
  }
  std::string describe_weight() const {
    return weight_schedule.kind == step_schedule::shape::constant
               ? step_schedule::constant(weight).describe()
               : weight_schedule.describe();
  }
  // Workers at start, and the range the autoscaler keeps the pool in.
  int workers = 1;
  int min_workers = 1;
  int max_workers = 64;
  // Indexed sources only: append the EOS id to every document. False means
  // the dataset's documents already end with it.
  bool append_eos = true;
  // Larger documents of this source are bad input; 0 uses the job's
  // max_document_bytes.
  int64_t max_document_bytes = 0;
};

// Settings of the autoscaler, which sizes source pools from observed
// demand and latency.
struct autoscale_config {
  bool enabled = false;
  // Worker capacity kept above the measured need (1.5 = 50% spare).
  double headroom = 1.5;
  // How often the planner re-evaluates pool sizes.
  int interval_ms = 500;
  // Cores the pools of one loader node may keep busy together; 0 takes
  // the node's hardware threads.
  int cpu_budget = 0;
  // A scheduled weight change this many steps ahead is already planned
  // for, so pools grow before the demand arrives.
  int lookahead_steps = 50;
};

// How the trainers are parallelised. Only one rank per data-parallel
// replica needs the data (tensor-parallel peers share it), so the loader
// builds one batch stream per replica. With context parallelism each of
// the replica's cp ranks receives its own slice of every row.
struct topology_config {
  int dp = 1;
  int tp = 1;
  int pp = 1;
  int cp = 1;
  // Pipeline stages that read the batch: the first (tokens) only, or the
  // first and the last (labels and loss mask).
  bool last_stage_consumes = false;
};

struct job_config {
  std::string config_path;
  uint64_t seed = 0;
  // Row length of each step. A constant length is `sequence_length`.
  // Otherwise `lengths` gives the length of each step, and
  // `sequence_length` is the longest of them.
  int sequence_length = 2048;
  length_schedule lengths;
  // Rows each rank receives per step at the shortest length. Set directly,
  // or derived from `global_rows` (the whole job's batch) divided by
  // `ranks`. Steps with longer rows get proportionally fewer, so every
  // step has the same token budget.
  int rows_per_rank = 1;
  // Data-parallel ranks (replicas) that receive batches.
  int ranks = 1;
  topology_config topology;
  cost_model cost;
  balance_method balancer = balance_method::best;
  std::string bind = "127.0.0.1";
  int base_port = 5555;
  // Port of the planner's CAF middleman, which nodes join and overlordctl
  // talks to; 0 keeps a one-process job private.
  int planner_port = 0;
  // Port of the planner's process's /metrics and /healthz endpoint, on
  // `bind`. 0 serves none, and overlordd --metrics-port overrides it.
  // It is left out of job_config's inspect(), so nodes never receive it:
  // processes on one host need different ports, so nodes take only
  // --metrics-port.
  int metrics_port = 0;
  // The planner assigns work once this many loader and constructor nodes
  // have joined (a --role all process counts as both).
  int loader_nodes = 1;
  int constructor_nodes = 1;
  // A node that sends no heartbeat for this long is taken as dead.
  int node_timeout_ms = 5000;
  bad_input_policy on_bad_input = bad_input_policy::skip;
  // Token id at the positions an image takes in its document; one past
  // GPT-2's vocabulary by default, so it never collides with text.
  int32_t image_token_id = 50257;
  mix_unit mix_by = mix_unit::tokens;
  // Directory with GPT-2's encoder.json and vocab.bpe.
  std::string tokenizer;
  // Steps the planner may plan beyond the oldest step a rank still needs.
  int plan_ahead = 4;
  // Steps a constructor builds, from its first requested step on, before
  // it serves that step, so that trainers start with this lead over the
  // loaders. 0 and 1 serve the first batch as soon as it is built. At
  // most plan_ahead.
  int startup_prefetch_steps = 0;
  // Documents each source pool keeps tokenized ahead of the planner.
  int buffer_documents = 1024;
  // Bytes of tokens and pixels each source pool keeps ready ahead of the
  // planner, counting reads in flight at their recent mean size.
  int64_t buffer_bytes = int64_t{256} << 20;
  // Documents larger than this many bytes are bad input.
  int64_t max_document_bytes = 64 << 20;
  // JSON Lines shards larger than this are read in byte ranges of this
  // size, so one large shard spreads over a pool's workers.
  int64_t read_range_bytes = 64 << 20;
  // WebDataset shards are read in byte ranges of this size, because their
  // decoded images take several times the bytes of the shard.
  int64_t image_read_range_bytes = 1 << 20;
  // Niceness source workers add to their own threads, so that decoding
  // yields the CPU to serving. 0 keeps the daemon's priority.
  int worker_nice = 10;
  // Largest ZeroMQ request a constructor or payload server accepts
  // (ZMQ_MAXMSGSIZE); requests are a few dozen bytes.
  int max_request_bytes = 4096;
  // Requests one trainer connection may keep open at a constructor for
  // steps not built yet; more get an error reply.
  int max_client_requests = 64;
  std::string log_level = "info";
  // Where the planner writes snapshots and deltas; empty turns them off.
  std::string checkpoint_dir;
  // A full snapshot every this many steps; a delta every step.
  int checkpoint_every = 100;
  // Snapshots kept; a trainer can resume from a step at or after the
  // oldest one kept.
  int checkpoint_keep = 20;
  autoscale_config autoscale;
  std::vector<source_config> sources;

  int global_rows() const { return rows_per_rank * ranks; }
  // Token positions of one step across all ranks.
  uint64_t tokens_per_step() const {
    return static_cast<uint64_t>(global_rows()) * shortest_length();
  }
  bool varies_length() const {
    return lengths.kind != length_schedule::shape::constant;
  }
  uint32_t shortest_length() const {
    return varies_length() ? lengths.shortest()
                           : static_cast<uint32_t>(sequence_length);
  }
  uint32_t length_at(uint64_t step) const {
    return varies_length() ? lengths.at(step, seed)
                           : static_cast<uint32_t>(sequence_length);
  }
  std::string describe_lengths() const {
    return varies_length() ? lengths.describe()
                           : std::to_string(sequence_length);
  }
  // Rows per rank in a step whose rows are `length` tokens long.
  uint32_t rows_per_rank_at(uint32_t length) const {
    return static_cast<uint32_t>(static_cast<uint64_t>(rows_per_rank) *
                                 shortest_length() / length);
  }

  // The document size limit of source `index`: its own or the job's.
  int64_t max_document_bytes_of(size_t index) const {
    auto own = sources.at(index).max_document_bytes;
    return own > 0 ? own : max_document_bytes;
  }
};

// A `--set KEY=VALUE` override. Keys are dotted paths; a source is
// addressed by name (`sources.mail.workers`).
using config_override = std::pair<std::string, std::string>;

// Parses "KEY=VALUE". Throws overlord::error(invalid_config) without '='.
config_override parse_override(const std::string& text);

// Loads, overrides and checks the configuration at `path`. Relative paths
// inside it are resolved against the config file's folder. Throws
// overlord::error(invalid_config) with one message that names the file,
// line, key and the fix for the first problem found.
job_config load_config(const std::string& path,
                       const std::vector<config_override>& overrides = {});

// Same, from YAML text; `origin` names it in messages and `base_dir`
// resolves relative paths.
job_config parse_config(const std::string& yaml_text, const std::string& origin,
                        const std::string& base_dir,
                        const std::vector<config_override>& overrides = {});

const char* to_string(source_format format);

// Returns `from` and every later step at which a weight schedule has a
// point. Weights change only there (linearly in between), so a check of
// these steps covers every step from `from` on.
std::set<uint64_t> weight_points_from(const job_config& config, uint64_t from);

// Largest number of sequence positions an image of `source` can take.
uint32_t max_image_positions(const source_config& source);
const char* to_string(mix_unit unit);
const char* to_string(bad_input_policy policy);

}  // namespace overlord::planner
