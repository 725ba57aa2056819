#include "checkpoint/restore.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>

#include "common/error.hpp"
#include "planner/rng.hpp"

namespace overlord::checkpoint {

std::vector<std::pair<std::string, std::string>> stream_settings(
    const planner::job_config& config) {
  std::vector<std::pair<std::string, std::string>> out = {
      {"seed", std::to_string(config.seed)},
      {"sequence_length", config.describe_lengths()},
      {"global_rows", std::to_string(config.global_rows())},
      {"mix_by", planner::to_string(config.mix_by)},
      {"on_bad_input", planner::to_string(config.on_bad_input)},
      {"max_document_bytes", std::to_string(config.max_document_bytes)},
      {"sources", std::to_string(config.sources.size())},
  };
  for (size_t i = 0; i < config.sources.size(); ++i) {
    const auto& source = config.sources[i];
    auto prefix = "sources[" + std::to_string(i) + "].";
    out.emplace_back(prefix + "name", source.name);
    out.emplace_back(prefix + "format", planner::to_string(source.format));
    out.emplace_back(prefix + "text_field", source.text_field);
    // Weight changes during a run go through set-weights, which the delta
    // log records. A different schedule in the config would plan the steps
    // replayed after the snapshot differently.
    out.emplace_back(prefix + "weight", source.describe_weight());
    if (source.format == planner::source_format::indexed)
      out.emplace_back(prefix + "append_eos",
                       source.append_eos ? "true" : "false");
    if (source.format == planner::source_format::webdataset) {
      out.emplace_back(prefix + "caption_field", source.caption_field);
      out.emplace_back(prefix + "image_max_pixels",
                       std::to_string(source.image_max_pixels));
      out.emplace_back(prefix + "patch_size", std::to_string(source.patch_size));
      std::string normalisation;
      for (int c = 0; c < 3; ++c)
        normalisation += std::to_string(source.image_mean[c]) + "/" +
                         std::to_string(source.image_std[c]) + " ";
      out.emplace_back(prefix + "image_mean/std", normalisation);
      out.emplace_back("image_token_id", std::to_string(config.image_token_id));
    }
    // Shards by file name, so moving the data folder keeps the stream.
    uint64_t hash = planner::stable_hash("");
    for (const auto& shard : source.shards)
      hash = planner::mix64(hash ^ planner::stable_hash(
                                       std::filesystem::path(shard).filename().string()));
    out.emplace_back(prefix + "shards", std::to_string(source.shards.size()) +
                                            " files, name hash " +
                                            std::to_string(hash));
    // Only an override is listed, so checkpoints of configs without one
    // keep matching.
    if (config.max_document_bytes_of(i) != config.max_document_bytes)
      out.emplace_back(prefix + "max_document_bytes",
                       std::to_string(config.max_document_bytes_of(i)));
  }
  return out;
}

namespace {

// Returns `key` with the name of the source it indexes, for example
// "sources[0] (mail).weight" for "sources[0].weight". Only messages use
// it: snapshots store the index form, which existing checkpoints match.
std::string with_source_name(const std::string& key,
                             const planner::job_config& config) {
  const std::string prefix = "sources[";
  const auto close = key.find(']');
  if (key.compare(0, prefix.size(), prefix) != 0 || close == std::string::npos)
    return key;
  const auto index = std::strtoul(key.c_str() + prefix.size(), nullptr, 10);
  if (index >= config.sources.size())
    return key;
  return key.substr(0, close + 1) + " (" + config.sources[index].name + ")" +
         key.substr(close + 1);
}

// Folds `later` into `into`, two set-weights changes logged for the same
// step: each sets only the sources it names, so both apply, and a source
// named in both takes the later weight.
void merge_weight_change(weight_change& into, const weight_change& later) {
  if (later.named.empty() || later.weights.size() != into.weights.size()) {
    into = later;
    return;
  }
  const bool all_named = into.named.empty();
  if (all_named)
    into.named.assign(into.weights.size(), true);
  for (size_t s = 0; s < later.weights.size(); ++s) {
    // Entries of sources that neither change names only show the weight
    // at that step; the later one is as current as any.
    if (later.named[s] || !into.named[s])
      into.weights[s] = later.weights[s];
    if (later.named[s])
      into.named[s] = true;
  }
  if (all_named)
    into.named.clear();
}

}  // namespace

restore_plan prepare_restore(const checkpoint_store& store,
                             const planner::job_config& config,
                             uint64_t resume_step) {
  auto loaded = store.load_snapshot(resume_step);
  if (!loaded)
    throw error(errc::invalid_config,
                "checkpoint " + store.directory() +
                    " has no snapshot at or before step " +
                    std::to_string(resume_step) +
                    "; resume from a later step or start a new job");

  restore_plan plan;
  plan.snapshot = decode_snapshot(loaded->payload, loaded->path);
  plan.snapshot_path = loaded->path;
  plan.resume_step = resume_step;

  auto current = stream_settings(config);
  const auto& saved = plan.snapshot.settings;
  for (size_t i = 0; i < std::max(current.size(), saved.size()); ++i) {
    auto key = i < current.size() ? current[i].first : saved[i].first;
    auto now = i < current.size() ? current[i].second : std::string("(none)");
    auto then = i < saved.size() ? saved[i].second : std::string("(none)");
    if (i < saved.size() && i < current.size() && saved[i].first != key)
      then = saved[i].first + "=" + then;
    if (now != then)
      throw error(errc::invalid_config,
                  "cannot resume from " + loaded->path + ": " +
                      with_source_name(key, config) + " was " + then +
                      " when the checkpoint was written and is " + now +
                      " now; resume with the same value or start a new "
                      "checkpoint directory");
  }

  // A log written across earlier resumes can hold several records for one
  // step; the later one is what the stream the trainers kept used. Weight
  // changes for one step come from one run and are merged.
  auto deltas = store.load_deltas();
  plan.torn_tail = deltas.torn_tail;
  std::map<uint64_t, step_delta> steps;
  std::map<uint64_t, weight_change> weights;
  for (const auto& payload : deltas.payloads) {
    auto delta = decode_delta(payload, store.directory() + "/deltas.log");
    if (delta.step)
      steps[delta.step->step] = *delta.step;
    if (delta.weights) {
      auto [entry, first] =
          weights.emplace(delta.weights->from_step, *delta.weights);
      if (!first)
        merge_weight_change(entry->second, *delta.weights);
    }
  }

  for (const auto& [from_step, values] : weights) {
    if (from_step >= resume_step) {
      plan.dropped_weight_changes++;
      continue;
    }
    if (from_step >= plan.snapshot.step)
      plan.weight_changes[from_step] = values;
  }
  for (const auto& [step, delta] : steps)
    if (step >= plan.snapshot.step && step < resume_step)
      plan.step_deltas[step] = delta;

  // Weight changes first within a step: they apply from that step on.
  for (uint64_t step = 0;;) {
    auto next_weights = weights.lower_bound(step);
    auto next_step = steps.lower_bound(step);
    uint64_t candidate = UINT64_MAX;
    if (next_weights != weights.end())
      candidate = std::min(candidate, next_weights->first);
    if (next_step != steps.end())
      candidate = std::min(candidate, next_step->first);
    if (candidate == UINT64_MAX || candidate >= resume_step)
      break;
    if (next_weights != weights.end() && next_weights->first == candidate) {
      delta_record record;
      record.weights = next_weights->second;
      plan.kept_records.push_back(encode_delta(record));
    }
    if (next_step != steps.end() && next_step->first == candidate) {
      delta_record record;
      record.step = next_step->second;
      plan.kept_records.push_back(encode_delta(record));
    }
    step = candidate + 1;
  }
  return plan;
}

}  // namespace overlord::checkpoint
