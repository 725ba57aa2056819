// Which trainer ranks consume data, and what each receives. Global ranks
// follow Megatron-LM's default order, tensor-parallel fastest, then
// context-parallel, data-parallel and pipeline-parallel:
//   rank = ((pp_rank * dp + dp_rank) * cp + cp_rank) * tp + tp_rank
// Tensor-parallel peers share one copy of the batch, so only tp_rank 0
// consumes; of the pipeline stages, the first (and optionally the last)
// does. Each consumer belongs to one data-parallel replica, whose
// constructor builds the batch once for all of them.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "planner/config.hpp"

namespace overlord::planner {

struct rank_coordinates {
  uint32_t dp = 0;
  uint32_t tp = 0;
  uint32_t pp = 0;
  uint32_t cp = 0;
};

struct consumer {
  uint32_t global_rank = 0;
  uint32_t replica = 0;  // data-parallel index: the constructor to pull from
  uint32_t cp_rank = 0;  // slice of each row this rank receives
  uint32_t stage = 0;    // pipeline stage
};

// Returns the coordinates of `global_rank`; throws overlord::error when it
// is outside the topology.
rank_coordinates coordinates_of(const topology_config& topology,
                                uint32_t global_rank);

// Returns what `global_rank` consumes, or nothing when it needs no data.
std::optional<consumer> consumer_of(const topology_config& topology,
                                    uint32_t global_rank);

// Every consuming rank, in global rank order.
std::vector<consumer> consumers(const topology_config& topology);

// The two chunks of a row that context-parallel rank `cp_rank` receives
// when the row is cut into 2 * cp_size equal chunks: chunk cp_rank and
// chunk 2 * cp_size - 1 - cp_rank. Pairing an early chunk with a late one
// evens out causal-attention work, which grows with the position.
std::pair<uint32_t, uint32_t> cp_chunks(uint32_t cp_size, uint32_t cp_rank);

}  // namespace overlord::planner
