// Rank balance per step: Overlord's balancer against a token-count-only
// split of the same rows and against the usual per-rank loader, where
// every rank packs its own disjoint slice of the data. Simulated
// synchronous step time is the slowest rank's modelled cost; the speedup
// compares it per delivered token.
//
// usage: balance_bench DATA_DIR
// Prints a table per scenario, then one JSON line.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "bench/corpus_sample.hpp"
#include "common/error.hpp"
#include "planner/balancer.hpp"
#include "planner/rng.hpp"
#include "planner/step_planner.hpp"
#include "sources/reader.hpp"
#include "sources/tokenizer.hpp"

using namespace overlord;
using namespace overlord::planner;

namespace {

// Token lengths (EOS included) of one source's documents, in stream order.
using length_stream = std::vector<uint32_t>;

struct scenario {
  std::string name;
  std::vector<length_stream> sources;
  std::vector<double> weights;
  mix_unit unit = mix_unit::tokens;
  int sequence_length = 8192;
  int ranks = 8;
  int rows_per_rank = 16;
  cost_model cost;
  int steps = 200;
};

struct result {
  double max_imbalance = 1;   // worst step
  double mean_imbalance = 0;  // mean over steps
  double step_time = 0;       // sum over steps of the slowest rank's cost
  double total_cost = 0;      // sum over steps and ranks
  double tokens = 0;          // non-padding tokens delivered
};

job_config make_config(const scenario& s, int ranks, int rows_per_rank,
                       uint64_t seed) {
  job_config config;
  config.seed = seed;
  config.sequence_length = s.sequence_length;
  config.ranks = ranks;
  config.rows_per_rank = rows_per_rank;
  config.mix_by = s.unit;
  config.cost = s.cost;
  for (size_t i = 0; i < s.sources.size(); ++i) {
    source_config source;
    source.name = "source" + std::to_string(i);
    source.weight = s.weights[i];
    config.sources.push_back(source);
  }
  return config;
}

// Feeds the planner documents (every `stride`-th from `first`) until it
// plans a step. Documents repeat when a stream runs out, like epochs.
step_plan plan_one(step_planner& planner, const scenario& s,
                   std::vector<uint64_t>& cursor, uint64_t first,
                   uint64_t stride) {
  for (;;) {
    auto outcome = planner.plan_next();
    if (outcome.plan)
      return std::move(*outcome.plan);
    uint32_t source = *outcome.starved_source;
    const auto& lengths = s.sources[source];
    std::vector<document_meta> docs;
    for (int i = 0; i < 64; ++i) {
      uint64_t index = (first + stride * (cursor[source] + i)) % lengths.size();
      document_meta meta;
      meta.source = source;
      meta.sequence = cursor[source] + i;
      meta.tokens = lengths[index];
      meta.key = std::to_string(index);
      docs.push_back(meta);
    }
    cursor[source] += 64;
    planner.add_documents(source, docs);
  }
}

uint64_t plan_tokens(const step_plan& plan) {
  uint64_t total = 0;
  for (const auto& row : plan.rows)
    for (const auto& p : row)
      total += p.length;
  return total;
}

void record(result& r, double max_cost, double mean_cost, int ranks) {
  double imbalance = mean_cost > 0 ? max_cost / mean_cost : 1;
  r.total_cost += mean_cost * ranks;
  r.max_imbalance = std::max(r.max_imbalance, imbalance);
  r.mean_imbalance += imbalance;
  r.step_time += max_cost;
}

// Overlord and the token-only split see the same global rows per step.
void run_global(const scenario& s, result& overlord, result& token_split) {
  auto config = make_config(s, s.ranks, s.rows_per_rank, 1);
  config.balancer = balance_method::best;
  step_planner planner(config);
  std::vector<uint64_t> cursor(s.sources.size(), 0);
  for (int step = 0; step < s.steps; ++step) {
    auto plan = plan_one(planner, s, cursor, 0, 1);
    std::vector<double> costs;
    std::vector<uint64_t> tokens;
    for (const auto& row : plan.rows) {
      costs.push_back(s.cost.row_cost(row));
      uint64_t used = 0;
      for (const auto& p : row)
        used += p.length;
      tokens.push_back(used);
    }
    auto ours = assign_rows(costs, tokens, s.ranks, balance_method::best);
    auto split = assign_rows(costs, tokens, s.ranks, balance_method::tokens);
    record(overlord, ours.max_cost, ours.mean_cost, s.ranks);
    record(token_split, split.max_cost, split.mean_cost, s.ranks);
    overlord.tokens += plan_tokens(plan);
    token_split.tokens += plan_tokens(plan);
  }
  overlord.mean_imbalance /= s.steps;
  token_split.mean_imbalance /= s.steps;
}

// The usual design: rank r reads every ranks-th document of each source
// and packs its own rows, with the same packer and mixture.
void run_per_rank(const scenario& s, result& per_rank) {
  std::vector<step_planner> planners;
  std::vector<std::vector<uint64_t>> cursors;
  for (int rank = 0; rank < s.ranks; ++rank) {
    planners.emplace_back(make_config(s, 1, s.rows_per_rank, 100 + rank));
    cursors.emplace_back(s.sources.size(), 0);
  }
  for (int step = 0; step < s.steps; ++step) {
    double max_cost = 0, total = 0;
    for (int rank = 0; rank < s.ranks; ++rank) {
      auto plan = plan_one(planners[rank], s, cursors[rank], rank, s.ranks);
      per_rank.tokens += plan_tokens(plan);
      double cost = 0;
      for (const auto& row : plan.rows)
        cost += s.cost.row_cost(row);
      max_cost = std::max(max_cost, cost);
      total += cost;
    }
    record(per_rank, max_cost, total / s.ranks, s.ranks);
  }
  per_rank.mean_imbalance /= s.steps;
}

// Lengths of every document of the three demo corpora, tokenized.
std::vector<length_stream> corpus_lengths(const std::string& data_dir) {
  auto tokenizer = sources::gpt2_tokenizer::load(data_dir + "/gpt2");
  sources::gpt2_piece_cache cache;
  std::vector<length_stream> streams(3);
  namespace fs = std::filesystem;
  auto add_folder = [&](size_t stream, const std::string& folder,
                        sources::shard_format format) {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(fs::path(data_dir) / folder))
      files.push_back(entry.path().string());
    std::sort(files.begin(), files.end());
    sources::reader_options options;
    options.format = format;
    for (const auto& file : files) {
      if (format == sources::shard_format::jsonl &&
          fs::path(file).extension() != ".jsonl")
        continue;
      if (format == sources::shard_format::text &&
          fs::path(file).extension() != ".txt")
        continue;
      for (const auto& doc : sources::read_shard(file, file, options).documents)
        streams[stream].push_back(
            static_cast<uint32_t>(tokenizer->encode(doc.text, cache).size() + 1));
    }
  };
  add_folder(0, "mail", sources::shard_format::jsonl);
  add_folder(1, "sotu", sources::shard_format::text);
  add_folder(2, "moby", sources::shard_format::text);
  return streams;
}

void print_row(const char* name, const result& r) {
  std::printf("  %-22s worst step %.3f  mean %.3f  step time %.4g  cost %.4g"
              "  tokens %.4g\n",
              name, r.max_imbalance, r.mean_imbalance, r.step_time,
              r.total_cost, r.tokens);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: balance_bench DATA_DIR\n";
    return 2;
  }
  try {
    // Cost per document: a*l + b*l^2 with b/a = 1/2048, so attention costs
    // as much as the rest of the model at 2048 tokens: a long-context
    // setting where attention dominates.
    cost_model attention_heavy;
    attention_heavy.linear = 1;
    attention_heavy.quadratic = 1.0 / 2048;

    scenario synthetic;
    synthetic.name = "synthetic: 80% 256-token, 20% 8192-token documents";
    length_stream lengths;
    for (uint64_t i = 0; i < 100000; ++i)
      lengths.push_back(bounded(draw(2024, i), 5) == 0 ? 8192 : 256);
    synthetic.sources = {lengths};
    synthetic.weights = {1};
    synthetic.unit = mix_unit::documents;
    synthetic.cost = attention_heavy;

    // Long-context training often runs one or two rows per rank per step;
    // the balancer then has few rows to move.
    scenario synthetic_small = synthetic;
    synthetic_small.name = "synthetic, 2 rows per rank";
    synthetic_small.rows_per_rank = 2;

    scenario corpora;
    corpora.name = "demo corpora: mail 0.5, sotu 0.3, moby 0.2 by tokens";
    corpora.sources = corpus_lengths(argv[1]);
    corpora.weights = {0.5, 0.3, 0.2};
    corpora.sequence_length = 8192;
    corpora.cost = attention_heavy;

    std::string json = "{\"bench\":\"balance\"";
    const std::vector<std::pair<scenario*, const char*>> runs = {
        {&synthetic, ""},
        {&synthetic_small, "small_batch_"},
        {&corpora, "corpora_"},
    };
    for (const auto& [s, prefix] : runs) {
      result ours, split, per_rank;
      run_global(*s, ours, split);
      run_per_rank(*s, per_rank);
      std::printf("%s\n  %d ranks x %d rows of %d tokens, %d steps, cost "
                  "a*l + b*l^2 per document, b/a = %.6f\n",
                  s->name.c_str(), s->ranks, s->rows_per_rank,
                  s->sequence_length, s->steps,
                  s->cost.quadratic / s->cost.linear);
      print_row("overlord balancer", ours);
      print_row("token-count split", split);
      print_row("per-rank loader", per_rank);
      // Per delivered token, because padding differs between the designs.
      double speedup = (per_rank.step_time / per_rank.tokens) /
                       (ours.step_time / ours.tokens);
      std::printf("  simulated step time per token, per-rank loader / "
                  "overlord: %.3f\n\n",
                  speedup);

      char buffer[512];
      std::snprintf(buffer, sizeof buffer,
                    ",\"%soverlord_max_mean\":%.4f,\"%stoken_split_max_mean\":%.4f,"
                    "\"%sper_rank_loader_max_mean\":%.4f,\"%sstep_time_speedup\":%.4f",
                    prefix, ours.max_imbalance, prefix, split.max_imbalance,
                    prefix, per_rank.max_imbalance, prefix, speedup);
      json += buffer;
    }
    std::printf("%s}\n", json.c_str());
    return 0;
  } catch (const error& e) {
    std::cerr << "balance_bench: " << e.what() << "\n";
    return 1;
  }
}
