// Message vocabulary between Overlord's actors: atoms, records, and the
// inspect overloads that let CAF copy, print and serialise them across
// nodes. Every type sent between nodes is registered in
// add_message_types, on every node alike.
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "planner/config.hpp"
#include "planner/plan.hpp"
#include "sources/image.hpp"

namespace overlord::actors {

// Planner -> pool: announce up to N more documents.
using announce_atom = caf::atom_constant<caf::atom("announce")>;
// Constructor -> pool: tokens of one piece.
using fetch_atom = caf::atom_constant<caf::atom("fetch")>;
// Payload server thread -> pool: a remote constructor's fetch.
using serve_atom = caf::atom_constant<caf::atom("serve")>;
// Payload client thread -> constructor: a remote fetch's reply.
using payload_atom = caf::atom_constant<caf::atom("payload")>;
// Pool -> worker: read and tokenize one shard.
using read_atom = caf::atom_constant<caf::atom("read")>;
// Planner -> constructor: the rows of one step.
using plan_atom = caf::atom_constant<caf::atom("plan")>;
// Transport thread -> constructor: a trainer requests a step.
using pull_atom = caf::atom_constant<caf::atom("pull")>;
// Constructor -> planner: a rank's trainers received this step.
using served_atom = caf::atom_constant<caf::atom("served")>;
// Planner -> pools: every rank is past this step; free what it used.
using release_atom = caf::atom_constant<caf::atom("release")>;
// Any -> supervisor: the job cannot go on.
using fatal_atom = caf::atom_constant<caf::atom("fatal")>;
// Anyone -> actor: report counters.
using stats_atom = caf::atom_constant<caf::atom("stats")>;
// Node agent -> planner: this node joins the job.
using join_atom = caf::atom_constant<caf::atom("join")>;
// Node agent -> planner: still alive.
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
// Planner -> node agent: run the pool of a source here.
using spawn_pool_atom = caf::atom_constant<caf::atom("spawnpool")>;
// Planner -> node agent: run the constructor of a rank here.
using spawn_rank_atom = caf::atom_constant<caf::atom("spawnrank")>;
// Planner -> constructors: source S is now served by this pool.
using pool_update_atom = caf::atom_constant<caf::atom("poolupdate")>;
// Planner -> node agent: stop this node (after a drain).
using leave_atom = caf::atom_constant<caf::atom("leave")>;
// overlordd -> its node agent, and the agent -> planner with its node id:
// the node shuts down on request, so its work moves without a warning.
using bye_atom = caf::atom_constant<caf::atom("bye")>;
// Admin -> planner: the job's state as JSON.
using status_atom = caf::atom_constant<caf::atom("status")>;
// Admin -> planner: the endpoint of a rank.
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;
// Admin -> planner: change mixture weights.
using set_weights_atom = caf::atom_constant<caf::atom("setweights")>;
// Admin -> planner: move a node's work elsewhere and stop it.
using drain_atom = caf::atom_constant<caf::atom("drain")>;
// Planner -> source pool: run this many workers from now on.
using resize_atom = caf::atom_constant<caf::atom("resize")>;
// Planner -> itself: re-evaluate pool sizes.
using scale_atom = caf::atom_constant<caf::atom("scale")>;
// Planner -> itself: size pools from their supply now that planning has
// waited one interval, because a starved pool's service time came earlier.
using supply_check_atom = caf::atom_constant<caf::atom("supcheck")>;
// Planner -> itself: periodic liveness check.
using tick_atom = caf::atom_constant<caf::atom("tick")>;
// Planner -> itself: assign work to the nodes present.
using assign_atom = caf::atom_constant<caf::atom("assign")>;
// Planner -> shadow constructor: the primary is gone; serve from now on.
using promote_atom = caf::atom_constant<caf::atom("promote")>;
// Node agent -> itself: try to reach a restarted planner again.
using reconnect_atom = caf::atom_constant<caf::atom("reconnect")>;
// Node agent -> planner: what this node still runs after a planner restart.
using rejoin_atom = caf::atom_constant<caf::atom("rejoin")>;
// Node agent -> constructor: the planner to report to from now on.
using planner_atom = caf::atom_constant<caf::atom("planner")>;
// Planner -> constructor: trainers moved to the shadow; stand by.
using demote_atom = caf::atom_constant<caf::atom("demote")>;
// Admin -> planner: every endpoint of a rank, primary first.
using endpoints_atom = caf::atom_constant<caf::atom("endpoints")>;
// Admin -> planner -> node agents: set a logger's level; node agents
// reply with, and report after joining, their loggers' levels.
using log_level_atom = caf::atom_constant<caf::atom("loglevel")>;

// Named counters an actor reports for status and logs.
using counters = std::map<std::string, uint64_t>;

// A process of the job as the planner sees it.
struct node_info {
  std::string id;       // unique per process, e.g. "loader-host-4242"
  std::string role;     // "loader", "constructor" or "all"
  uint32_t pid = 0;
  std::string address;  // host:port of its middleman, or "local"
  std::string bind;     // address its trainer-facing sockets bind to
  uint32_t cores = 0;   // hardware threads, the default worker budget
  bool curve = false;   // its ZeroMQ sockets use CURVE
};

// A constructor a node still runs when it joins a restarted planner.
struct rank_asset {
  uint32_t rank = 0;
  bool shadow = false;
  int64_t served = -1;  // last step its trainers reported holding
  caf::actor constructor;
  std::string endpoint;
};

// Where a replacement pool picks up a source's stream: documents from
// `first_sequence` on are kept for constructors; only those from
// `announce_from` on are announced to the planner again.
struct stream_position {
  uint64_t first_sequence = 0;
  uint32_t epoch = 0;
  uint32_t shard_position = 0;
  uint32_t record = 0;
  uint64_t announce_from = 0;
};

// One tokenized document as a worker returns it. An image-text document
// starts with `patches` image positions (image_token_id each), followed
// by the caption's tokens.
struct tokenized_document {
  std::string key;
  std::vector<int32_t> tokens;  // EOS appended
  bool replaced_invalid_utf8 = false;
  uint32_t patches = 0;  // 0 for text documents
  bool truncated_caption = false;
  uint64_t line = 0;  // JSON Lines read in ranges: line within the range
  sources::decoded_image image;
  // The image file's bytes and where it came from ("shard:member"), so
  // that the pool can drop the pixels once fetched and decode again if a
  // replacement constructor fetches the document a second time.
  std::string encoded_image;
  std::string image_where;
};

// A fetched piece within one process: its tokens and, when the piece
// starts a document with an image, that image, shared with the pool
// instead of copied.
struct piece_payload {
  std::vector<int32_t> tokens;
  std::shared_ptr<const sources::decoded_image> image;
};

// A worker's result for one shard.
struct shard_output {
  uint32_t epoch = 0;
  uint32_t position = 0;  // index in the epoch's shard order
  // Which read of the shard this is: indexed datasets are read in ranges
  // of documents, other shards in one read (part 0).
  uint32_t part = 0;
  std::vector<tokenized_document> documents;
  std::vector<std::string> skipped_kinds;
  uint64_t busy_us = 0;  // time the worker spent reading and tokenizing
  uint64_t lines = 0;    // JSON Lines read in ranges: lines in this range
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_info& x) {
  return f(caf::meta::type_name("node_info"), x.id, x.role, x.pid, x.address,
           x.bind, x.cores, x.curve);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rank_asset& x) {
  return f(caf::meta::type_name("rank_asset"), x.rank, x.shadow, x.served,
           x.constructor, x.endpoint);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_position& x) {
  return f(caf::meta::type_name("stream_position"), x.first_sequence, x.epoch,
           x.shard_position, x.record, x.announce_from);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tokenized_document& x) {
  return f(caf::meta::type_name("tokenized_document"), x.key, x.tokens,
           x.replaced_invalid_utf8, x.patches, x.truncated_caption, x.image,
           x.line, x.encoded_image, x.image_where);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, shard_output& x) {
  return f(caf::meta::type_name("shard_output"), x.epoch, x.position,
           x.part, x.documents, x.skipped_kinds, x.busy_us, x.lines);
}

// Registers the custom message types with an actor system config.
void add_message_types(caf::actor_system_config& config);

}  // namespace overlord::actors

// Only sent within one process (a pool's reply to an in-process
// constructor), so it needs no serialisation.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(overlord::actors::piece_payload)

namespace overlord::sources {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, decoded_image& x) {
  return f(caf::meta::type_name("decoded_image"), x.height, x.width,
           x.channels, x.patches, x.pixels, x.mean, x.std);
}

}  // namespace overlord::sources

namespace overlord::planner {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, document_meta& x) {
  return f(caf::meta::type_name("document_meta"), x.source, x.sequence,
           x.epoch, x.tokens, x.key, x.shard_position, x.record, x.patches,
           x.atomic);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, piece& x) {
  return f(caf::meta::type_name("piece"), x.source, x.sequence, x.epoch, x.key,
           x.offset, x.length, x.document_tokens, x.patches, x.atomic);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rank_plan& x) {
  return f(caf::meta::type_name("rank_plan"), x.step, x.rank,
           x.sequence_length, x.rows, x.cost, x.imbalance, x.carried_pieces);
}

// The plane travels from the planner to every node, shards included, so
// all nodes read the same files in the same order.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, source_config& x) {
  return f(caf::meta::type_name("source_config"), x.name, x.format,
           x.text_field, x.paths, x.shards, x.weight, x.weight_schedule,
           x.workers, x.min_workers, x.max_workers, x.append_eos,
           x.caption_field, x.image_max_pixels, x.patch_size, x.image_mean[0],
           x.image_mean[1], x.image_mean[2], x.image_std[0], x.image_std[1],
           x.image_std[2], x.max_document_bytes);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, topology_config& x) {
  return f(caf::meta::type_name("topology_config"), x.dp, x.tp, x.pp, x.cp,
           x.last_stage_consumes);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cost_model& x) {
  return f(caf::meta::type_name("cost_model"), x.masking, x.linear,
           x.quadratic, x.vision_linear, x.vision_quadratic);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_schedule::point& x) {
  return f(caf::meta::type_name("schedule_point"), x.step, x.value);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_schedule& x) {
  return f(caf::meta::type_name("step_schedule"), x.kind, x.points);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f,
                                        length_schedule::option& x) {
  return f(caf::meta::type_name("length_option"), x.length, x.from_step,
           x.weight);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, length_schedule& x) {
  return f(caf::meta::type_name("length_schedule"), x.kind, x.options);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, autoscale_config& x) {
  return f(caf::meta::type_name("autoscale_config"), x.enabled, x.headroom,
           x.interval_ms, x.cpu_budget, x.lookahead_steps);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, job_config& x) {
  return f(caf::meta::type_name("job_config"), x.config_path, x.seed,
           x.sequence_length, x.lengths, x.rows_per_rank, x.ranks, x.topology,
           x.cost,
           x.balancer, x.bind, x.base_port, x.planner_port, x.loader_nodes,
           x.constructor_nodes, x.node_timeout_ms, x.on_bad_input, x.mix_by,
           x.tokenizer, x.plan_ahead, x.startup_prefetch_steps,
           x.buffer_documents, x.buffer_bytes,
           x.max_document_bytes,
           x.log_level, x.checkpoint_dir, x.checkpoint_every,
           x.checkpoint_keep, x.autoscale, x.sources, x.image_token_id,
           x.max_request_bytes, x.max_client_requests, x.read_range_bytes,
           x.image_read_range_bytes, x.worker_nice);
}

}  // namespace overlord::planner
