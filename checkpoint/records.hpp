// Plain forms of the checkpoint records in checkpoint.fbs, with their
// encoders and decoders. Encoding is deterministic: the same record gives
// the same bytes, so loading a snapshot and saving it again reproduces it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "planner/plan.hpp"

namespace overlord::checkpoint {

// The version snapshots are written in. Version 2 added each source's
// weight step, which a build that reads only version 1 would take for
// "set to 0 at step 0", so such builds reject it. Version 1 is still read.
constexpr uint32_t snapshot_format_version = 2;
constexpr uint32_t oldest_snapshot_format_version = 1;

struct source_cursor {
  std::string name;
  uint64_t first_sequence = 0;
  uint32_t epoch = 0;
  uint32_t shard_position = 0;
  uint32_t record = 0;
  uint64_t announce_from = 0;
  double drawn = 0;
};

struct snapshot_record {
  uint64_t step = 0;
  // Config values the stream depends on, as (key, value) text.
  std::vector<std::pair<std::string, std::string>> settings;
  std::string topology;
  std::vector<double> weights;  // set by an operator; empty when none was
  uint64_t weights_from_step = 0;
  // Per source, the step its weight took effect at (UINT64_MAX: never
  // set); empty when every weight took effect at weights_from_step.
  std::vector<uint64_t> weights_from_steps;
  std::vector<double> mixture_weights;
  double total_drawn = 0;
  std::vector<source_cursor> sources;
  std::vector<planner::piece> carried;
};

struct step_delta {
  uint64_t step = 0;
  std::vector<double> drawn;
  uint32_t carried_pieces = 0;
};

struct weight_change {
  uint64_t from_step = 0;
  std::vector<double> weights;
  // Per source, whether the operator set it; empty when every source was.
  std::vector<bool> named;
};

struct delta_record {
  std::optional<step_delta> step;
  std::optional<weight_change> weights;
};

std::string encode_snapshot(const snapshot_record& record);

// Throws overlord::error(invalid_input) naming `origin` when the bytes are
// not a valid snapshot of a known format version.
snapshot_record decode_snapshot(const std::string& bytes,
                                const std::string& origin);

std::string encode_delta(const delta_record& record);
delta_record decode_delta(const std::string& bytes, const std::string& origin);

}  // namespace overlord::checkpoint
