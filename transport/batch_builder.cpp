#include "transport/batch_builder.hpp"

#include "transport/batch_generated.h"

namespace overlord::transport {

flatbuffers::DetachedBuffer build_batch(const planner::rank_plan& plan,
                                        const batch_layout& layout,
                                        const payload_lookup& payload) {
  const size_t rows = plan.rows.size();
  const size_t length = layout.sequence_length;
  std::vector<int32_t> tokens(rows * length, layout.pad_id);
  std::vector<int32_t> labels(rows * length, ignore_label);
  std::vector<uint8_t> loss_mask(rows * length, 0);
  std::vector<int32_t> position_ids(rows * length, 0);
  std::vector<int32_t> cu_seqlens;
  std::vector<uint32_t> row_splits{0};

  flatbuffers::FlatBufferBuilder builder(rows * length * 16 + 4096);
  std::vector<flatbuffers::Offset<wire::DocumentSlice>> slices;
  uint64_t used_tokens = 0;
  uint32_t documents_started = 0;
  uint32_t documents_split = 0;

  for (size_t row = 0; row < rows; ++row) {
    uint32_t position = 0;
    for (size_t index = 0; index < plan.rows[row].size(); ++index) {
      const auto& p = plan.rows[row][index];
      const int32_t* source_tokens = payload(row, index);
      const size_t base = row * length + position;
      cu_seqlens.push_back(static_cast<int32_t>(position));
      for (uint32_t i = 0; i < p.length; ++i) {
        tokens[base + i] = source_tokens[i];
        position_ids[base + i] = static_cast<int32_t>(i);
        bool last_of_document = p.offset + i + 1 == p.document_tokens;
        if (!last_of_document) {
          // Within the slice, or the first token of the next slice when
          // the document continues in another row.
          labels[base + i] = source_tokens[i + 1];
          loss_mask[base + i] = 1;
        }
      }

      slices.push_back(wire::CreateDocumentSlice(
          builder, static_cast<uint16_t>(p.source),
          builder.CreateString(p.key), p.epoch, static_cast<uint32_t>(row),
          position, p.length, p.offset, p.document_tokens));
      if (p.starts_document())
        ++documents_started;
      if (!p.starts_document() || !p.ends_document())
        ++documents_split;
      position += p.length;
      used_tokens += p.length;
    }
    cu_seqlens.push_back(static_cast<int32_t>(position));
    row_splits.push_back(static_cast<uint32_t>(cu_seqlens.size()));
  }

  std::vector<flatbuffers::Offset<flatbuffers::String>> names;
  for (const auto& name : layout.source_names)
    names.push_back(builder.CreateString(name));

  auto counters = wire::CreateBatchCounters(
      builder, used_tokens, rows * length - used_tokens, documents_started,
      documents_split, static_cast<uint32_t>(plan.carried_pieces), plan.cost,
      plan.imbalance);
  auto batch = wire::CreateBatch(
      builder, plan.step, plan.rank, static_cast<uint32_t>(rows),
      layout.sequence_length, layout.pad_id, builder.CreateVector(tokens),
      builder.CreateVector(labels), builder.CreateVector(loss_mask),
      builder.CreateVector(position_ids), builder.CreateVector(cu_seqlens),
      builder.CreateVector(row_splits), builder.CreateVector(slices),
      builder.CreateVector(names), counters);
  builder.Finish(
      wire::CreateReply(builder, wire::ReplyBody::Batch, batch.Union()));
  return builder.Release();
}

}  // namespace overlord::transport
