// Encoding and checking of the payload frames in payload.fbs.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "sources/image.hpp"

namespace overlord::transport {

struct payload_request {
  uint64_t id = 0;
  uint32_t source = 0;
  uint64_t step = 0;
  uint64_t sequence = 0;
  uint32_t offset = 0;
  uint32_t length = 0;
};

struct payload_reply {
  uint64_t id = 0;
  uint8_t code = 0;  // 0 on success
  std::string message;
  std::vector<int32_t> tokens;
  std::shared_ptr<const sources::decoded_image> image;  // or null
};

std::string encode_payload_request(const payload_request& value);

// Returns the request in `frame`, or nothing when it fails verification.
std::optional<payload_request> decode_payload_request(std::string_view frame);

// Builds a reply frame as a ZeroMQ message without an extra copy.
// `image` may be null.
zmq::message_t encode_payload_reply(uint64_t id, uint8_t code,
                                    const std::string& message,
                                    const int32_t* tokens, size_t count,
                                    const sources::decoded_image* image = nullptr);

// Returns the reply in `frame`, or nothing when it fails verification.
std::optional<payload_reply> decode_payload_reply(const void* data,
                                                  size_t size);

}  // namespace overlord::transport
