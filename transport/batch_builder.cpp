#include "transport/batch_builder.hpp"

#include "common/error.hpp"
#include "planner/topology.hpp"
#include "transport/batch_generated.h"

namespace overlord::transport {

namespace {

placed_image place_image(const planner::piece& p, size_t row, size_t index,
                         uint32_t position, const image_lookup& images) {
  const sources::decoded_image* image = images ? images(row, index) : nullptr;
  if (image == nullptr || image->patches != p.patches ||
      image->channels != image->mean.size() ||
      image->pixels.size() != static_cast<size_t>(image->channels) *
                                  image->height * image->width)
    throw error(errc::internal,
                "document " + p.key + " has " + std::to_string(p.patches) +
                    " image positions but " +
                    (image ? "an image of " + std::to_string(image->patches) +
                                 " patches with " +
                                 std::to_string(image->pixels.size()) +
                                 " values"
                           : std::string("no image")) +
                    " was fetched");
  placed_image out;
  out.row = static_cast<uint32_t>(row);
  out.row_offset = position;
  out.piece = &p;
  out.image = image;
  return out;
}

}  // namespace

packed_rows lay_out_rows(const planner::rank_plan& plan,
                      const batch_layout& layout,
                      const payload_lookup& payload,
                      const image_lookup& images) {
  const size_t rows = plan.rows.size();
  const size_t length = layout.sequence_length;
  packed_rows out;
  out.tokens.assign(rows * length, layout.pad_id);
  out.labels.assign(rows * length, ignore_label);
  out.loss_mask.assign(rows * length, 0);
  out.position_ids.assign(rows * length, 0);
  out.row_splits.push_back(0);

  for (size_t row = 0; row < rows; ++row) {
    uint32_t position = 0;
    for (size_t index = 0; index < plan.rows[row].size(); ++index) {
      const auto& p = plan.rows[row][index];
      const int32_t* source_tokens = payload(row, index);
      const size_t base = row * length + position;
      out.cu_seqlens.push_back(static_cast<int32_t>(position));
      if (p.patches > 0 && p.starts_document())
        out.images.push_back(place_image(plan.rows[row][index], row, index,
                                         position, images));
      for (uint32_t i = 0; i < p.length; ++i) {
        out.tokens[base + i] = source_tokens[i];
        out.position_ids[base + i] = static_cast<int32_t>(i);
        bool last_of_document = p.offset + i + 1 == p.document_tokens;
        bool image_position = p.offset + i < p.patches;
        if (!last_of_document && !image_position) {
          // Within the piece, or the first token of the next piece when
          // the document continues in another row.
          out.labels[base + i] = source_tokens[i + 1];
          out.loss_mask[base + i] = 1;
        }
      }
      position += p.length;
      out.used_tokens += p.length;
    }
    out.cu_seqlens.push_back(static_cast<int32_t>(position));
    out.row_splits.push_back(static_cast<uint32_t>(out.cu_seqlens.size()));
  }
  return out;
}

namespace {

// Copies chunks `first` and `second` of every row (each `chunk` elements
// long) into a new array of rows of 2 * chunk elements.
template <class T>
std::vector<T> slice_rows(const std::vector<T>& values, size_t rows,
                          size_t length, size_t chunk, uint32_t first,
                          uint32_t second) {
  std::vector<T> out;
  out.reserve(rows * 2 * chunk);
  for (size_t row = 0; row < rows; ++row) {
    auto begin = values.begin() + row * length;
    out.insert(out.end(), begin + first * chunk, begin + (first + 1) * chunk);
    out.insert(out.end(), begin + second * chunk, begin + (second + 1) * chunk);
  }
  return out;
}

}  // namespace

flatbuffers::DetachedBuffer serialize_batch(const planner::rank_plan& plan,
                                            const batch_layout& layout,
                                            const packed_rows& rows,
                                            uint32_t cp_rank,
                                            flatbuffers::Allocator* allocator) {
  const size_t row_count = plan.rows.size();
  const size_t length = layout.sequence_length;
  const uint32_t cp_size = layout.cp_size == 0 ? 1 : layout.cp_size;
  if (length % (2 * cp_size) != 0 && cp_size > 1)
    throw error(errc::invalid_config,
                "sequence_length " + std::to_string(length) +
                    " does not split into 2 * cp chunks");

  // Images ride with the batch of every cp rank whose chunks they overlap.
  std::pair<uint32_t, uint32_t> kept_chunks = {0, 0};
  if (cp_size > 1)
    kept_chunks = planner::cp_chunks(cp_size, cp_rank);
  const size_t chunk_length = length / (2 * cp_size);
  auto rides_here = [&](const placed_image& placed) {
    if (cp_size == 1)
      return true;
    const size_t begin = placed.row_offset;
    const size_t end = begin + placed.image->patches;
    auto overlaps = [&](uint32_t chunk) {
      return begin < (chunk + 1) * chunk_length && chunk * chunk_length < end;
    };
    return overlaps(kept_chunks.first) || overlaps(kept_chunks.second);
  };

  // Sized for the whole batch, so the buffer does not grow by doubling.
  // The allocator maps these bytes up front, so only images that ride with
  // this cp rank count.
  size_t image_bytes = 0;
  for (const auto& placed : rows.images)
    if (rides_here(placed))
      image_bytes +=
          placed.image->pixels.size() + placed.piece->key.size() + 128;
  flatbuffers::FlatBufferBuilder builder(
      row_count * length * 16 / cp_size + image_bytes + 4096, allocator);
  std::vector<flatbuffers::Offset<wire::DocumentSlice>> slices;
  uint32_t documents_started = 0;
  uint32_t documents_split = 0;
  for (size_t row = 0; row < row_count; ++row) {
    uint32_t position = 0;
    for (const auto& p : plan.rows[row]) {
      slices.push_back(wire::CreateDocumentSlice(
          builder, static_cast<uint16_t>(p.source),
          builder.CreateString(p.key), p.epoch, static_cast<uint32_t>(row),
          position, p.length, p.offset, p.document_tokens));
      documents_started += p.starts_document();
      documents_split += !p.starts_document() || !p.ends_document();
      position += p.length;
    }
  }

  std::vector<flatbuffers::Offset<wire::Image>> images;
  for (const auto& placed : rows.images) {
    if (!rides_here(placed))
      continue;
    const auto& image = *placed.image;
    images.push_back(wire::CreateImage(
        builder, placed.row, placed.row_offset, image.patches, image.height,
        image.width, image.channels, builder.CreateVector(image.pixels),
        static_cast<uint16_t>(placed.piece->source),
        builder.CreateString(placed.piece->key),
        builder.CreateVector(image.mean.data(), image.channels),
        builder.CreateVector(image.std.data(), image.channels)));
  }

  std::vector<flatbuffers::Offset<flatbuffers::String>> names;
  for (const auto& name : layout.source_names)
    names.push_back(builder.CreateString(name));

  std::vector<uint32_t> chunks;
  flatbuffers::Offset<flatbuffers::Vector<int32_t>> tokens, labels, positions;
  flatbuffers::Offset<flatbuffers::Vector<uint8_t>> mask;
  uint32_t row_length = static_cast<uint32_t>(length);
  if (cp_size == 1) {
    tokens = builder.CreateVector(rows.tokens);
    labels = builder.CreateVector(rows.labels);
    mask = builder.CreateVector(rows.loss_mask);
    positions = builder.CreateVector(rows.position_ids);
  } else {
    auto [first, second] = planner::cp_chunks(cp_size, cp_rank);
    chunks = {first, second};
    const size_t chunk = length / (2 * cp_size);
    row_length = static_cast<uint32_t>(2 * chunk);
    tokens = builder.CreateVector(
        slice_rows(rows.tokens, row_count, length, chunk, first, second));
    labels = builder.CreateVector(
        slice_rows(rows.labels, row_count, length, chunk, first, second));
    mask = builder.CreateVector(
        slice_rows(rows.loss_mask, row_count, length, chunk, first, second));
    positions = builder.CreateVector(
        slice_rows(rows.position_ids, row_count, length, chunk, first, second));
  }

  auto counters = wire::CreateBatchCounters(
      builder, rows.used_tokens, row_count * length - rows.used_tokens,
      documents_started, documents_split,
      static_cast<uint32_t>(plan.carried_pieces), plan.cost, plan.imbalance);
  auto batch = wire::CreateBatch(
      builder, plan.step, plan.rank, static_cast<uint32_t>(row_count),
      layout.sequence_length, layout.pad_id, cp_size, cp_rank,
      builder.CreateVector(chunks), row_length, tokens, labels, mask,
      positions, builder.CreateVector(rows.cu_seqlens),
      builder.CreateVector(rows.row_splits), builder.CreateVector(slices),
      builder.CreateVector(names), counters, builder.CreateVector(images));
  builder.Finish(
      wire::CreateReply(builder, wire::ReplyBody::Batch, batch.Union()));
  return builder.Release();
}

flatbuffers::DetachedBuffer build_batch(const planner::rank_plan& plan,
                                        const batch_layout& layout,
                                        const payload_lookup& payload,
                                        const image_lookup& images) {
  return serialize_batch(plan, layout,
                         lay_out_rows(plan, layout, payload, images), 0);
}

}  // namespace overlord::transport
