#include "planner/packer.hpp"

#include <algorithm>
#include <numeric>
#include <string>

#include "common/error.hpp"

namespace overlord::planner {

std::vector<piece> split_document(const document_meta& meta,
                                  uint32_t capacity) {
  if (meta.atomic && meta.tokens > capacity)
    throw error(errc::internal,
                "document " + meta.key + " must stay whole but has " +
                    std::to_string(meta.tokens) + " tokens, more than a row's " +
                    std::to_string(capacity));
  std::vector<piece> pieces;
  for (uint32_t offset = 0; offset < meta.tokens; offset += capacity) {
    piece p;
    p.source = meta.source;
    p.sequence = meta.sequence;
    p.epoch = meta.epoch;
    p.key = meta.key;
    p.offset = offset;
    p.length = std::min(capacity, meta.tokens - offset);
    p.document_tokens = meta.tokens;
    // A document's image positions come first.
    p.patches = offset >= meta.patches ? 0
                                       : std::min(meta.patches - offset, p.length);
    p.atomic = meta.atomic;
    pieces.push_back(std::move(p));
  }
  return pieces;
}

packing pack_rows(const std::vector<piece>& carried,
                  const std::vector<piece>& fresh, uint32_t row_count,
                  uint32_t capacity) {
  packing result;
  result.rows.resize(row_count);
  std::vector<uint32_t> free_tokens(row_count, capacity);

  auto place = [&](const piece& p) {
    for (uint32_t row = 0; row < row_count; ++row) {
      if (free_tokens[row] >= p.length) {
        result.rows[row].push_back(p);
        free_tokens[row] -= p.length;
        return true;
      }
    }
    return false;
  };

  std::vector<const piece*> leftover;
  for (const auto& p : carried)
    if (!place(p))
      leftover.push_back(&p);

  std::vector<uint32_t> order(fresh.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return fresh[a].length > fresh[b].length;
  });
  std::vector<bool> placed(fresh.size(), false);
  for (uint32_t index : order)
    placed[index] = place(fresh[index]);
  for (uint32_t i = 0; i < fresh.size(); ++i)
    if (!placed[i])
      leftover.push_back(&fresh[i]);

  for (const piece* p : leftover)
    result.leftover.push_back(*p);
  return result;
}

}  // namespace overlord::planner
