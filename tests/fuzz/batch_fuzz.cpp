// Fuzz target: the trainer client's verify-and-read path for replies
// (client::received_batch over transport/wire) on arbitrary frames.
// A frame must either be rejected with overlord::error, or give a batch
// that a trainer can read by its documented layout without leaving the
// frame: every array of rows * row_length values, and row r's boundaries
// at cu_seqlens[row_splits[r] .. row_splits[r + 1]). The target reads
// every field, as overlord_pull and the Python client do, and takes the
// digest twice to check that it is a function of the frame.

#include <zmq.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

#include "client/client.hpp"
#include "common/error.hpp"
#include "tests/fuzz/fuzz_support.hpp"
#include "transport/wire.hpp"

namespace {

using overlord::wire::Batch;

template <class T>
uint64_t sum_values(const flatbuffers::Vector<T>* values) {
  uint64_t sum = 0;
  if (values != nullptr)
    for (auto value : *values)
      sum += static_cast<uint64_t>(value);
  return sum;
}

// Reads the rows as a trainer does: the arrays by row and position, and
// each row's piece boundaries through row_splits.
void read_rows(const Batch& batch) {
  const uint64_t rows = batch.rows();
  const uint64_t row_length = batch.row_length();
  uint64_t checksum = 0;
  for (uint64_t row = 0; row < rows; ++row) {
    for (uint64_t position = 0; position < row_length; ++position) {
      const auto index = static_cast<flatbuffers::uoffset_t>(
          row * row_length + position);
      checksum += static_cast<uint64_t>(batch.tokens()->Get(index));
      checksum += static_cast<uint64_t>(batch.labels()->Get(index));
      checksum += batch.loss_mask()->Get(index);
      checksum += static_cast<uint64_t>(batch.position_ids()->Get(index));
    }
    const uint32_t first = batch.row_splits()->Get(
        static_cast<flatbuffers::uoffset_t>(row));
    const uint32_t end = batch.row_splits()->Get(
        static_cast<flatbuffers::uoffset_t>(row + 1));
    for (uint32_t i = first; i < end; ++i)
      checksum += static_cast<uint64_t>(batch.cu_seqlens()->Get(i));
  }
  // Keeps the reads from being optimised away.
  FUZZ_REQUIRE(checksum != UINT64_MAX || rows > 0, "unreachable");
}

void read_metadata(const Batch& batch) {
  std::size_t names = 0;
  if (batch.source_names() != nullptr)
    for (const auto* name : *batch.source_names())
      names += name->str().size();
  if (batch.documents() != nullptr) {
    for (const auto* slice : *batch.documents()) {
      std::string key = slice->key() != nullptr ? slice->key()->str() : "";
      names += key.size() + slice->source() + slice->row() +
               slice->row_offset() + slice->length() +
               slice->document_offset() + slice->document_tokens() +
               slice->epoch();
    }
  }
  if (const auto* counters = batch.counters())
    names += counters->tokens() + counters->padding() +
             counters->documents_started() + counters->documents_split() +
             counters->carried_pieces() +
             static_cast<std::size_t>(counters->rank_cost() > 0) +
             static_cast<std::size_t>(counters->imbalance() > 0);
  names += sum_values(batch.cp_chunks());
  FUZZ_REQUIRE(names != SIZE_MAX, "unreachable");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  zmq::message_t message(data, size);
  try {
    overlord::client::received_batch received(std::move(message));
    const Batch& batch = received.batch();
    read_rows(batch);
    read_metadata(batch);
    FUZZ_REQUIRE(overlord::transport::batch_digest(batch) ==
                     overlord::transport::batch_digest(batch),
                 "the digest of one frame changed");
  } catch (const overlord::error&) {
    // Rejected: a malformed frame, or an error reply from the server.
  }
  return 0;
}
