// Helpers around the FlatBuffers records in batch.fbs: building and
// checking Request and Reply frames, and the content digest of a batch.
// Used by both ends, so it links nothing but FlatBuffers and OpenSSL.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "transport/batch_generated.h"

namespace overlord::transport {

struct request {
  uint64_t step = 0;
  uint32_t rank = 0;
  uint32_t cp_rank = 0;
  uint64_t received_before = 0;  // the client holds every earlier step
};

std::string encode_request(const request& value);

// Returns the request in `frame`, or nothing when the frame fails the
// FlatBuffers verifier.
std::optional<request> decode_request(std::string_view frame);

// Builds a Reply frame that carries an error.
std::string encode_error(uint8_t code, const std::string& message);

// Returns the verified Reply in `frame`, or nullptr when the frame is not
// a well-formed Reply. The pointer refers into `frame`.
const wire::Reply* verify_reply(const void* data, size_t size);

// Returns what makes `batch` unreadable by its documented layout, or an
// empty string when it is readable. Tokens, labels, loss_mask and
// position_ids must have rows * row_length values. row_splits must have
// rows + 1 non-decreasing indexes from 0 to the size of cu_seqlens. Within
// a row, cu_seqlens offsets must not decrease and stay within
// 0..sequence_length. Each image must sit in a row of the batch with its
// patches inside sequence_length, have 1 to 4 channels and channels *
// height * width pixels, and one mean and one positive std per channel. The FlatBuffers verifier
// checks none of this.
std::string check_batch_layout(const wire::Batch& batch);

// Writes the normalised float32 values of `channels` planes of `plane`
// 8-bit pixels (CHW) to `out`: (v / 255 - mean[c]) / std[c]. Every caller
// gets the same bits, because the function alone computes them, as
// v * (1 / (255 * std[c])) - mean[c] / std[c] in float32.
void normalise_pixels(const uint8_t* pixels, uint32_t channels, size_t plane,
                      const float* mean, const float* std, float* out);

// normalise_pixels for a batch's image, which must pass
// check_batch_layout; `out` takes channels * height * width values.
void normalise_image(const wire::Image& image, float* out);

// Returns the hex SHA-256 of a batch's content: step, rank, shape, every
// array and every document slice. Counters that measure timing are left
// out, so equal plans give equal digests on every run.
std::string batch_digest(const wire::Batch& batch);

// Returns the hex SHA-256 of the same content without the sample keys.
// Batches with the same tokens in the same places get the same digest
// whatever the sources' key schemes. One example is a JSON Lines source
// and the indexed dataset converted from it.
std::string batch_content_digest(const wire::Batch& batch);

}  // namespace overlord::transport
