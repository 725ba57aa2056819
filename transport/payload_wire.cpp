#include "transport/payload_wire.hpp"

#include "transport/payload_generated.h"

namespace overlord::transport {

std::string encode_payload_request(const payload_request& value) {
  flatbuffers::FlatBufferBuilder builder(96);
  builder.Finish(wire::CreatePayloadRequest(builder, value.id, value.source,
                                            value.step, value.sequence,
                                            value.offset, value.length));
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                     builder.GetSize());
}

std::optional<payload_request> decode_payload_request(std::string_view frame) {
  flatbuffers::Verifier verifier(
      reinterpret_cast<const uint8_t*>(frame.data()), frame.size());
  if (!verifier.VerifyBuffer<wire::PayloadRequest>(nullptr))
    return std::nullopt;
  auto* root = flatbuffers::GetRoot<wire::PayloadRequest>(frame.data());
  return payload_request{root->id(),       root->source(), root->step(),
                         root->sequence(), root->offset(), root->length()};
}

zmq::message_t encode_payload_reply(uint64_t id, uint8_t code,
                                    const std::string& message,
                                    const int32_t* tokens, size_t count) {
  flatbuffers::FlatBufferBuilder builder(count * 4 + message.size() + 128);
  auto text = builder.CreateString(message);
  auto values = builder.CreateVector(tokens, count);
  builder.Finish(wire::CreatePayloadReply(builder, id, code, text, values));
  // Hand the builder's buffer to ZeroMQ, which frees it after sending.
  auto* buffer = new flatbuffers::DetachedBuffer(builder.Release());
  return zmq::message_t(
      buffer->data(), buffer->size(),
      [](void*, void* hint) {
        delete static_cast<flatbuffers::DetachedBuffer*>(hint);
      },
      buffer);
}

std::optional<payload_reply> decode_payload_reply(const void* data,
                                                  size_t size) {
  flatbuffers::Verifier verifier(static_cast<const uint8_t*>(data), size, 64,
                                 100000000);
  if (!verifier.VerifyBuffer<wire::PayloadReply>(nullptr))
    return std::nullopt;
  auto* root = flatbuffers::GetRoot<wire::PayloadReply>(data);
  payload_reply out;
  out.id = root->id();
  out.code = root->code();
  if (root->message())
    out.message = root->message()->str();
  if (root->tokens())
    out.tokens.assign(root->tokens()->begin(), root->tokens()->end());
  return out;
}

}  // namespace overlord::transport
