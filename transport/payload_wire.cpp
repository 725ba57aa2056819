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
                                    const int32_t* tokens, size_t count,
                                    const sources::decoded_image* image) {
  const size_t image_bytes = image ? image->pixels.size() + 128 : 0;
  flatbuffers::FlatBufferBuilder builder(count * 4 + image_bytes +
                                         message.size() + 128);
  auto text = builder.CreateString(message);
  auto values = builder.CreateVector(tokens, count);
  flatbuffers::Offset<wire::PayloadImage> picture;
  if (image)
    picture = wire::CreatePayloadImage(
        builder, image->height, image->width, image->channels, image->patches,
        builder.CreateVector(image->pixels),
        builder.CreateVector(image->mean.data(), image->mean.size()),
        builder.CreateVector(image->std.data(), image->std.size()));
  builder.Finish(
      wire::CreatePayloadReply(builder, id, code, text, values, picture));
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
  if (const auto* picture = root->image()) {
    auto image = std::make_shared<sources::decoded_image>();
    image->height = picture->height();
    image->width = picture->width();
    image->channels = picture->channels();
    image->patches = picture->patches();
    // Three channels, each with its mean and a positive std. Checked first,
    // so that the pixel count below cannot wrap around.
    auto* mean = picture->mean();
    auto* deviation = picture->std();
    if (image->channels != image->mean.size() || !mean || !deviation ||
        mean->size() != image->channels || deviation->size() != image->channels)
      return std::nullopt;
    // A reply whose pixels do not match its shape would make the batch
    // read past them; treat it like a frame that fails verification.
    uint64_t values = 0;
    if (!picture->pixels() ||
        __builtin_mul_overflow(uint64_t{image->height}, image->width,
                               &values) ||
        __builtin_mul_overflow(values, uint64_t{image->channels}, &values) ||
        picture->pixels()->size() != values)
      return std::nullopt;
    image->pixels.assign(picture->pixels()->begin(), picture->pixels()->end());
    for (uint32_t c = 0; c < image->channels; ++c) {
      image->mean[c] = mean->Get(c);
      image->std[c] = deviation->Get(c);
      if (!(image->std[c] > 0))
        return std::nullopt;
    }
    out.image = std::move(image);
  }
  return out;
}

}  // namespace overlord::transport
