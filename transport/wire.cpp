#include "transport/wire.hpp"

#include <openssl/evp.h>

#include <memory>
#include <utility>

namespace overlord::transport {

std::string encode_request(const request& value) {
  flatbuffers::FlatBufferBuilder builder(64);
  builder.Finish(wire::CreateRequest(builder, value.step, value.rank,
                                     value.cp_rank, value.received_before));
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                     builder.GetSize());
}

std::optional<request> decode_request(std::string_view frame) {
  flatbuffers::Verifier verifier(
      reinterpret_cast<const uint8_t*>(frame.data()), frame.size());
  if (!verifier.VerifyBuffer<wire::Request>(nullptr))
    return std::nullopt;
  auto* root = flatbuffers::GetRoot<wire::Request>(frame.data());
  return request{root->step(), root->rank(), root->cp_rank(),
                 root->received_before()};
}

std::string encode_error(uint8_t code, const std::string& message) {
  flatbuffers::FlatBufferBuilder builder(256);
  auto body = wire::CreateErrorReplyDirect(builder, code, message.c_str());
  builder.Finish(wire::CreateReply(builder, wire::ReplyBody::ErrorReply,
                                   body.Union()));
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                     builder.GetSize());
}

const wire::Reply* verify_reply(const void* data, size_t size) {
  // Batches can hold millions of array elements; raise the verifier's
  // table limit accordingly while keeping its depth limit.
  flatbuffers::Verifier verifier(static_cast<const uint8_t*>(data), size, 64,
                                 100000000);
  if (!wire::VerifyReplyBuffer(verifier))
    return nullptr;
  return wire::GetReply(data);
}

namespace {

template <class T>
uint64_t size_of(const flatbuffers::Vector<T>* values) {
  return values != nullptr ? values->size() : 0;
}

}  // namespace

std::string check_batch_layout(const wire::Batch& batch) {
  const uint64_t cells = uint64_t{batch.rows()} * batch.row_length();
  const std::pair<const char*, uint64_t> arrays[] = {
      {"tokens", size_of(batch.tokens())},
      {"labels", size_of(batch.labels())},
      {"loss_mask", size_of(batch.loss_mask())},
      {"position_ids", size_of(batch.position_ids())},
  };
  for (const auto& [name, size] : arrays)
    if (size != cells)
      return std::string(name) + " has " + std::to_string(size) +
             " values, expected rows * row_length = " + std::to_string(cells);

  const auto* splits = batch.row_splits();
  const uint64_t boundaries = size_of(batch.cu_seqlens());
  if (size_of(splits) != uint64_t{batch.rows()} + 1)
    return "row_splits has " + std::to_string(size_of(splits)) +
           " values, expected rows + 1 = " +
           std::to_string(uint64_t{batch.rows()} + 1);
  if (splits->Get(0) != 0 || splits->Get(batch.rows()) != boundaries)
    return "row_splits must run from 0 to the " + std::to_string(boundaries) +
           " entries of cu_seqlens";
  for (uint32_t row = 0; row < batch.rows(); ++row) {
    const uint32_t begin = splits->Get(row);
    const uint32_t end = splits->Get(row + 1);
    if (end < begin || end > boundaries)
      return "row_splits decreases or passes the end of cu_seqlens at row " +
             std::to_string(row);
    int32_t previous = 0;
    for (uint32_t i = begin; i < end; ++i) {
      const int32_t offset = batch.cu_seqlens()->Get(i);
      if (offset < previous ||
          static_cast<uint32_t>(offset) > batch.sequence_length())
        return "cu_seqlens of row " + std::to_string(row) +
               " decreases or leaves 0.." +
               std::to_string(batch.sequence_length());
      previous = offset;
    }
  }

  if (const auto* images = batch.images()) {
    for (uint32_t i = 0; i < images->size(); ++i) {
      const auto* image = images->Get(i);
      const std::string where = "image " + std::to_string(i);
      const uint64_t channels = image->channels();
      if (channels == 0 || channels > 4)
        return where + " has " + std::to_string(channels) +
               " channels, expected 1 to 4";
      // The product can exceed 64 bits (4 x 2^31 x 2^31 wraps to 0).
      uint64_t values = 0;
      if (__builtin_mul_overflow(uint64_t{image->height()}, image->width(),
                                 &values) ||
          __builtin_mul_overflow(values, channels, &values))
        return where + " of " + std::to_string(image->height()) + " x " +
               std::to_string(image->width()) + " pixels is too large";
      if (image->row() >= batch.rows())
        return where + " is in row " + std::to_string(image->row()) +
               " of a batch with " + std::to_string(batch.rows()) + " rows";
      if (uint64_t{image->row_offset()} + image->patches() >
          batch.sequence_length())
        return where + " has patches past sequence_length " +
               std::to_string(batch.sequence_length());
      if (size_of(image->pixels()) != values)
        return where + " has " + std::to_string(size_of(image->pixels())) +
               " pixel values, expected channels * height * width = " +
               std::to_string(values);
      if (size_of(image->mean()) != channels ||
          size_of(image->std()) != channels)
        return where + " needs one mean and one std per channel (" +
               std::to_string(channels) + ")";
      for (uint32_t c = 0; c < channels; ++c)
        if (!(image->std()->Get(c) > 0))
          return where + " has std " + std::to_string(image->std()->Get(c)) +
                 " for channel " + std::to_string(c) + ", expected > 0";
    }
  }
  return {};
}

void normalise_pixels(const uint8_t* pixels, uint32_t channels, size_t plane,
                      const float* mean, const float* std, float* out) {
  for (uint32_t c = 0; c < channels; ++c) {
    const float scale = 1.0f / (255.0f * std[c]);
    const float shift = mean[c] / std[c];
    const uint8_t* in = pixels + c * plane;
    float* target = out + c * plane;
    for (size_t i = 0; i < plane; ++i)
      target[i] = static_cast<float>(in[i]) * scale - shift;
  }
}

void normalise_image(const wire::Image& image, float* out) {
  normalise_pixels(image.pixels()->data(), image.channels(),
                   static_cast<size_t>(image.height()) * image.width(),
                   image.mean()->data(), image.std()->data(), out);
}

namespace {

class sha256 {
 public:
  sha256() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr);
  }

  void add(const void* data, size_t size) {
    EVP_DigestUpdate(context_.get(), data, size);
  }

  template <class T>
  void add_value(T value) {
    add(&value, sizeof(value));
  }

  template <class T>
  void add_vector(const flatbuffers::Vector<T>* values) {
    uint64_t count = values ? values->size() : 0;
    add_value(count);
    if (count)
      add(values->Data(), count * sizeof(T));
  }

  void add_string(const flatbuffers::String* text) {
    uint64_t size = text ? text->size() : 0;
    add_value(size);
    if (size)
      add(text->data(), size);
  }

  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(context_.get(), digest, &length);
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < length; ++i) {
      out += digits[digest[i] >> 4];
      out += digits[digest[i] & 15];
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> context_;
};

std::string digest_of(const wire::Batch& batch, bool with_keys) {
  sha256 hash;
  hash.add_value(batch.step());
  hash.add_value(batch.rank());
  hash.add_value(batch.rows());
  hash.add_value(batch.sequence_length());
  hash.add_value(batch.cp_size());
  hash.add_value(batch.cp_rank());
  hash.add_vector(batch.cp_chunks());
  hash.add_value(batch.row_length());
  hash.add_vector(batch.tokens());
  hash.add_vector(batch.labels());
  hash.add_vector(batch.loss_mask());
  hash.add_vector(batch.position_ids());
  hash.add_vector(batch.cu_seqlens());
  hash.add_vector(batch.row_splits());
  if (auto* names = batch.source_names())
    for (auto* name : *names)
      hash.add_string(name);
  if (auto* documents = batch.documents()) {
    for (auto* slice : *documents) {
      hash.add_value(slice->source());
      if (with_keys)
        hash.add_string(slice->key());
      hash.add_value(slice->epoch());
      hash.add_value(slice->row());
      hash.add_value(slice->row_offset());
      hash.add_value(slice->length());
      hash.add_value(slice->document_offset());
      hash.add_value(slice->document_tokens());
    }
  }
  // Text-only batches hash exactly as before images existed.
  if (auto* images = batch.images(); images && images->size() > 0) {
    hash.add_value(static_cast<uint64_t>(images->size()));
    for (auto* image : *images) {
      hash.add_value(image->row());
      hash.add_value(image->row_offset());
      hash.add_value(image->patches());
      hash.add_value(image->height());
      hash.add_value(image->width());
      hash.add_value(image->channels());
      hash.add_vector(image->pixels());
      hash.add_vector(image->mean());
      hash.add_vector(image->std());
      hash.add_value(image->source());
      hash.add_string(image->key());
    }
  }
  return hash.hex();
}

}  // namespace

std::string batch_digest(const wire::Batch& batch) {
  return digest_of(batch, true);
}

std::string batch_content_digest(const wire::Batch& batch) {
  return digest_of(batch, false);
}

}  // namespace overlord::transport
