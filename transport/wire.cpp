#include "transport/wire.hpp"

#include <openssl/evp.h>

#include <memory>

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
