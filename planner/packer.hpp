// Packs document pieces into fixed-capacity rows. A plain function of its
// inputs, independent of how many ranks will receive the rows.
#pragma once

#include <cstdint>
#include <vector>

#include "planner/plan.hpp"

namespace overlord::planner {

// Splits a document of `meta.tokens` tokens into pieces of at most
// `capacity` tokens, in order. An atomic document becomes one piece; one
// longer than `capacity` throws overlord::error(internal), since config
// checks make that impossible.
std::vector<piece> split_document(const document_meta& meta, uint32_t capacity);

struct packing {
  std::vector<row_plan> rows;
  std::vector<piece> leftover;  // pieces that fit no row, in input order
};

// Packs `carried` then `fresh` pieces into `row_count` rows of `capacity`
// tokens. Carried pieces are placed first, in order, so a piece is carried
// at most a few times; fresh pieces go first-fit in decreasing length
// (ties keep input order). Pieces are never cut here, so an atomic
// document lands whole in one row, or in the leftover. Pieces that fit
// nowhere are returned as leftover.
packing pack_rows(const std::vector<piece>& carried,
                  const std::vector<piece>& fresh, uint32_t row_count,
                  uint32_t capacity);

}  // namespace overlord::planner
