#include "sources/tokenizer.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>

#include "common/error.hpp"

namespace overlord::sources {

namespace {

std::size_t hash_bytes(std::string_view bytes) {
  return std::hash<std::string_view>{}(bytes);
}

// Returns the smallest power of two that is at least twice `count`, which
// keeps the load factor of a linear-probing table at or below one half.
std::size_t table_capacity(std::size_t count) {
  std::size_t capacity = 16;
  while (capacity < 2 * count)
    capacity *= 2;
  return capacity;
}

}  // namespace

// ---------------------------------------------------------------------------
// gpt2_piece_cache

gpt2_piece_cache::gpt2_piece_cache(std::size_t slot_count) {
  std::size_t rounded = 1;
  while (rounded < slot_count)
    rounded *= 2;
  slots_.resize(rounded);
}

gpt2_piece_cache::slot& gpt2_piece_cache::find_slot(uint64_t owner_id,
                                                    std::size_t hash) {
  if (owner_id != owner_id_) {
    std::fill(slots_.begin(), slots_.end(), slot{});
    owner_id_ = owner_id;
  }
  return slots_[hash & (slots_.size() - 1)];
}

// ---------------------------------------------------------------------------
// Lookup tables

void gpt2_tokenizer::build(const std::vector<std::string>& tokens_by_id,
                           int32_t eos_id) {
  static std::atomic<uint64_t> last_instance_id{0};
  instance_id_ = ++last_instance_id;
  eos_id_ = eos_id;

  token_bytes_.clear();
  token_offsets_.assign(1, 0);
  for (const std::string& token : tokens_by_id) {
    token_bytes_ += token;
    token_offsets_.push_back(static_cast<uint32_t>(token_bytes_.size()));
  }

  // The special token is left out of both tables, so that encode never
  // produces it from text.
  bytes_table_.assign(table_capacity(tokens_by_id.size()), bytes_table_slot{});
  const std::size_t bytes_mask = bytes_table_.size() - 1;
  for (std::size_t id = 0; id < tokens_by_id.size(); ++id) {
    if (static_cast<int32_t>(id) == eos_id)
      continue;
    std::size_t index = hash_bytes(tokens_by_id[id]) & bytes_mask;
    while (bytes_table_[index].id >= 0)
      index = (index + 1) & bytes_mask;
    bytes_table_[index] = {token_offsets_[id],
                           static_cast<uint32_t>(tokens_by_id[id].size()),
                           static_cast<int32_t>(id)};
  }

  for (int byte = 0; byte < 256; ++byte) {
    const char value = static_cast<char>(byte);
    const std::string_view bytes(&value, 1);
    byte_ids_[byte] = find_token(bytes, hash_bytes(bytes));
  }

  // Every split of a token into two tokens is a pair that BPE may merge into
  // it. js-tiktoken merges any two adjacent parts whose concatenated bytes
  // are a token, so the table lists all such splits, not only the merges
  // in vocab.bpe.
  std::vector<bpe_pair_table::entry> pairs;
  for (std::size_t id = 0; id < tokens_by_id.size(); ++id) {
    if (static_cast<int32_t>(id) == eos_id)
      continue;
    const std::string_view token = tokens_by_id[id];
    for (std::size_t split = 1; split < token.size(); ++split) {
      const std::string_view left_bytes = token.substr(0, split);
      const std::string_view right_bytes = token.substr(split);
      const int32_t left = find_token(left_bytes, hash_bytes(left_bytes));
      const int32_t right = find_token(right_bytes, hash_bytes(right_bytes));
      if (left >= 0 && right >= 0)
        pairs.push_back({left, right, static_cast<int32_t>(id)});
    }
  }
  pair_table_.build(pairs);
}

int32_t gpt2_tokenizer::find_token(std::string_view bytes,
                                   std::size_t hash) const {
  const std::size_t mask = bytes_table_.size() - 1;
  std::size_t index = hash & mask;
  while (true) {
    const bytes_table_slot& slot = bytes_table_[index];
    if (slot.id < 0)
      return -1;
    if (slot.size == bytes.size() &&
        std::memcmp(token_bytes_.data() + slot.offset, bytes.data(),
                    bytes.size()) == 0)
      return slot.id;
    index = (index + 1) & mask;
  }
}

// ---------------------------------------------------------------------------
// Encoding

struct gpt2_tokenizer::encode_buffers {
  std::string piece;
  std::vector<int32_t> byte_ids;
  bpe_merger merger;
};

std::vector<int32_t> gpt2_tokenizer::encode(std::string_view utf8) const {
  std::vector<int32_t> ids;
  encode_text(utf8, nullptr, ids);
  return ids;
}

std::vector<int32_t> gpt2_tokenizer::encode(std::string_view utf8,
                                            gpt2_piece_cache& cache) const {
  std::vector<int32_t> ids;
  encode_text(utf8, &cache, ids);
  return ids;
}

namespace {

std::size_t utf8_size(char32_t code_point) {
  return 1 + (code_point >= 0x80) + (code_point >= 0x800) +
         (code_point >= 0x10000);
}

}  // namespace

void gpt2_tokenizer::encode_text(std::string_view utf8,
                                 gpt2_piece_cache* cache,
                                 std::vector<int32_t>& ids) const {
  std::size_t replacements = 0;
  const std::u32string code_points = decode_utf8_lossy(utf8, &replacements);
  const std::u32string_view text(code_points);
  encode_buffers buffers;
  // English text averages a little over four bytes per token.
  ids.reserve(utf8.size() / 4);

  std::size_t begin = 0;
  std::size_t byte_begin = 0;
  while (begin < text.size()) {
    const std::size_t end = find_gpt2_piece_end(text, begin);

    // Valid input contains the bytes of each piece, and the piece's code
    // points give their count. Otherwise the piece is encoded again, with
    // U+FFFD for each invalid sequence.
    std::string_view piece;
    if (replacements == 0) {
      std::size_t byte_count = 0;
      for (std::size_t i = begin; i < end; ++i)
        byte_count += utf8_size(text[i]);
      piece = utf8.substr(byte_begin, byte_count);
      byte_begin += byte_count;
    } else {
      buffers.piece.clear();
      for (std::size_t i = begin; i < end; ++i)
        append_utf8(buffers.piece, text[i]);
      piece = buffers.piece;
    }
    begin = end;

    encode_piece(piece, buffers, cache, ids);
  }
}

void gpt2_tokenizer::encode_piece(std::string_view piece,
                                  encode_buffers& buffers,
                                  gpt2_piece_cache* cache,
                                  std::vector<int32_t>& ids) const {
  if (piece.size() == 1) {
    ids.push_back(byte_ids_[static_cast<uint8_t>(piece[0])]);
    return;
  }

  // js-tiktoken looks the whole piece up before merging. The merge does not
  // always reach a piece that is itself a token, so this step is needed for
  // the same output, not only for speed.
  const std::size_t hash = hash_bytes(piece);
  if (const int32_t id = find_token(piece, hash); id >= 0) {
    ids.push_back(id);
    return;
  }

  // Only pieces that need merging go to the cache: for a piece that is a
  // token, the lookup above is as fast as a cache hit.
  gpt2_piece_cache::slot* slot = nullptr;
  if (cache != nullptr && piece.size() <= gpt2_piece_cache::max_piece_bytes) {
    slot = &cache->find_slot(instance_id_, hash);
    if (slot->id_count != 0 && slot->piece_size == piece.size() &&
        std::memcmp(slot->piece, piece.data(), piece.size()) == 0) {
      ++cache->hits_;
      ids.insert(ids.end(), slot->ids, slot->ids + slot->id_count);
      return;
    }
    ++cache->misses_;
  }

  std::vector<int32_t>& byte_ids = buffers.byte_ids;
  byte_ids.resize(piece.size());
  for (std::size_t i = 0; i < piece.size(); ++i)
    byte_ids[i] = byte_ids_[static_cast<uint8_t>(piece[i])];
  const std::size_t first_new = ids.size();
  buffers.merger.merge(pair_table_, byte_ids.data(), byte_ids.size(), ids);

  if (slot != nullptr) {
    // A piece of n bytes has at most n ids, because every token has at
    // least one byte, so the ids fit in the slot.
    slot->piece_size = static_cast<uint8_t>(piece.size());
    slot->id_count = static_cast<uint8_t>(ids.size() - first_new);
    std::memcpy(slot->piece, piece.data(), piece.size());
    std::copy(ids.begin() + first_new, ids.end(), slot->ids);
  }
}

// ---------------------------------------------------------------------------
// Decoding

std::string_view gpt2_tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= vocab_size())
    throw error(errc::invalid_input,
                "token id " + std::to_string(id) +
                    " is outside the GPT-2 vocabulary [0, " +
                    std::to_string(vocab_size()) +
                    "); check that the ids come from the same vocabulary");
  const uint32_t begin = token_offsets_[id];
  const uint32_t end = token_offsets_[id + 1];
  return std::string_view(token_bytes_).substr(begin, end - begin);
}

std::string gpt2_tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids)
    out += token_bytes(id);
  return out;
}

}  // namespace overlord::sources
