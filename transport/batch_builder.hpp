// Lays out one rank's packed rows as a wire Batch: tokens, next-token
// labels, loss mask, position ids and cu_seqlens. Pure functions of the
// plan and the payloads, so equal inputs give byte-identical batches.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "planner/plan.hpp"
#include "sources/image.hpp"

namespace overlord::transport {

// Label of a position that carries no loss (PyTorch's ignore_index).
constexpr int32_t ignore_label = -100;

struct batch_layout {
  uint32_t sequence_length = 0;
  int32_t pad_id = 0;
  std::vector<std::string> source_names;
  uint32_t cp_size = 1;  // context-parallel ranks sharing each row
};

// Returns the tokens of piece `index` of row `row`: `length` tokens, plus
// the next token of the document when the piece does not end it (that
// token is the label of its last position).
using payload_lookup = std::function<const int32_t*(size_t row, size_t index)>;

// Returns the image of piece `index` of row `row`, or null when the piece
// does not start a document with an image.
using image_lookup =
    std::function<const sources::decoded_image*(size_t row, size_t index)>;

// An image placed in a row, before serialisation.
struct placed_image {
  uint32_t row = 0;
  uint32_t row_offset = 0;
  const planner::piece* piece = nullptr;
  const sources::decoded_image* image = nullptr;
};

// The full rows of one step for one replica, before serialisation.
struct packed_rows {
  std::vector<int32_t> tokens;
  std::vector<int32_t> labels;
  std::vector<uint8_t> loss_mask;
  std::vector<int32_t> position_ids;
  std::vector<int32_t> cu_seqlens;
  std::vector<uint32_t> row_splits;
  std::vector<placed_image> images;
  uint64_t used_tokens = 0;
};

// Positions of a document's image (its first `patches` tokens) get label
// ignore_label and loss mask 0. A piece that starts a document with
// patches > 0 must have an image from `images`; its shape must match.
packed_rows lay_out_rows(const planner::rank_plan& plan,
                      const batch_layout& layout,
                      const payload_lookup& payload,
                      const image_lookup& images = nullptr);

// Serialises `rows` as a finished Reply buffer whose body is the Batch
// that context-parallel rank `cp_rank` receives (all of each row when
// layout.cp_size is 1). The buffer comes from `allocator` (flatbuffers'
// default when null), which must outlive it; the bytes do not depend on it.
flatbuffers::DetachedBuffer serialize_batch(
    const planner::rank_plan& plan, const batch_layout& layout,
    const packed_rows& rows, uint32_t cp_rank,
    flatbuffers::Allocator* allocator = nullptr);

// lay_out_rows then serialize_batch for cp rank 0.
flatbuffers::DetachedBuffer build_batch(const planner::rank_plan& plan,
                                        const batch_layout& layout,
                                        const payload_lookup& payload,
                                        const image_lookup& images = nullptr);

}  // namespace overlord::transport
