// Lays out one rank's packed rows as a wire Batch: tokens, next-token
// labels, loss mask, position ids and cu_seqlens. Pure function of the
// plan and the payloads, so equal inputs give byte-identical batches.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "planner/plan.hpp"

namespace overlord::transport {

// Label of a position that carries no loss (PyTorch's ignore_index).
constexpr int32_t ignore_label = -100;

struct batch_layout {
  uint32_t sequence_length = 0;
  int32_t pad_id = 0;
  std::vector<std::string> source_names;
};

// Returns the tokens of piece `index` of row `row`: `length` tokens, plus
// the next token of the document when the piece does not end it (that
// token is the label of its last position).
using payload_lookup = std::function<const int32_t*(size_t row, size_t index)>;

// Builds a finished Reply buffer whose body is the Batch for `plan`.
flatbuffers::DetachedBuffer build_batch(const planner::rank_plan& plan,
                                        const batch_layout& layout,
                                        const payload_lookup& payload);

}  // namespace overlord::transport
