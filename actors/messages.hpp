// Message vocabulary between Overlord's actors: atoms, and the inspect
// overloads that let CAF copy, print and (across nodes) serialise the
// planner's records.
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "planner/plan.hpp"

namespace overlord::actors {

// Planner -> pool: announce up to N more documents.
using announce_atom = caf::atom_constant<caf::atom("announce")>;
// Constructor -> pool: tokens of one piece.
using fetch_atom = caf::atom_constant<caf::atom("fetch")>;
// Pool -> worker: read and tokenize one shard.
using read_atom = caf::atom_constant<caf::atom("read")>;
// Planner -> constructor: the rows of one step.
using plan_atom = caf::atom_constant<caf::atom("plan")>;
// Transport thread -> constructor: a trainer asks for a step.
using pull_atom = caf::atom_constant<caf::atom("pull")>;
// Constructor -> planner: a rank's trainer received this step.
using served_atom = caf::atom_constant<caf::atom("served")>;
// Any -> supervisor: the job cannot go on.
using fatal_atom = caf::atom_constant<caf::atom("fatal")>;
// Anyone -> actor: report counters.
using stats_atom = caf::atom_constant<caf::atom("stats")>;
// Constructor -> planner: this actor serves rank R.
using register_atom = caf::atom_constant<caf::atom("register")>;

// Named counters an actor reports for status and logs.
using counters = std::map<std::string, uint64_t>;

// One tokenized document as a worker returns it.
struct tokenized_document {
  std::string key;
  std::vector<int32_t> tokens;  // EOS appended
  bool replaced_invalid_utf8 = false;
};

// What a worker made of one shard.
struct shard_output {
  uint32_t epoch = 0;
  uint32_t position = 0;  // index in the epoch's shard order
  std::vector<tokenized_document> documents;
  // Skipped records as "kind where: detail", already logged by the worker.
  std::vector<std::string> skipped;
  std::vector<std::string> skipped_kinds;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, tokenized_document& x) {
  return f(caf::meta::type_name("tokenized_document"), x.key, x.tokens,
           x.replaced_invalid_utf8);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, shard_output& x) {
  return f(caf::meta::type_name("shard_output"), x.epoch, x.position,
           x.documents, x.skipped, x.skipped_kinds);
}

// Registers the custom message types with an actor system config.
void add_message_types(caf::actor_system_config& config);

}  // namespace overlord::actors

namespace overlord::planner {

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, document_meta& x) {
  return f(caf::meta::type_name("document_meta"), x.source, x.sequence,
           x.epoch, x.tokens, x.key);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, piece& x) {
  return f(caf::meta::type_name("piece"), x.source, x.sequence, x.epoch, x.key,
           x.offset, x.length, x.document_tokens);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rank_plan& x) {
  return f(caf::meta::type_name("rank_plan"), x.step, x.rank, x.rows, x.cost,
           x.imbalance, x.carried_pieces);
}

}  // namespace overlord::planner
