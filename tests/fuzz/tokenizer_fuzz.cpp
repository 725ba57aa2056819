// Fuzz target: the tokenizer on arbitrary bytes. Checks the WHATWG UTF-8
// decoder (sources/utf8) and the GPT-2 encoder against properties that
// hold for every input:
// - decoding yields only Unicode scalar values, at most one per byte, and
//   at least as many U+FFFD as it reports replacements;
// - re-encoding the decoded text gives valid UTF-8 that decodes to the
//   same code points, and gives the input back when it was valid;
// - decode(encode(bytes)) equals that re-encoded text, because byte-level
//   BPE loses nothing beyond the decoder's replacements;
// - encoding with a piece cache, cold or warm, gives the same ids.
// Needs the GPT-2 vocabulary: $OVERLORD_GPT2_DIR or $OVERLORD_DATA_DIR/gpt2.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sources/tokenizer.hpp"
#include "sources/utf8.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using overlord::sources::decode_utf8_lossy;
using overlord::sources::encode_utf8;
using overlord::sources::gpt2_piece_cache;
using overlord::sources::gpt2_tokenizer;
using overlord::sources::replacement_character;

std::shared_ptr<const gpt2_tokenizer> tokenizer;

void check_decoder(std::string_view bytes, const std::u32string& decoded,
                   std::size_t replacements) {
  FUZZ_REQUIRE(decoded.size() <= bytes.size(),
               std::to_string(decoded.size()) + " code points from " +
                   std::to_string(bytes.size()) + " bytes");

  std::size_t replacement_count = 0;
  for (char32_t code_point : decoded) {
    FUZZ_REQUIRE(code_point <= 0x10FFFF &&
                     !(code_point >= 0xD800 && code_point <= 0xDFFF),
                 "decoded a value that is not a Unicode scalar value");
    if (code_point == replacement_character)
      ++replacement_count;
  }
  FUZZ_REQUIRE(replacement_count >= replacements,
               std::to_string(replacements) + " replacements reported, " +
                   std::to_string(replacement_count) + " U+FFFD decoded");

  const std::string reencoded = encode_utf8(decoded);
  std::size_t second_replacements = 0;
  FUZZ_REQUIRE(decode_utf8_lossy(reencoded, &second_replacements) == decoded,
               "re-encoded text decodes to other code points");
  FUZZ_REQUIRE(second_replacements == 0,
               "re-encoded text is not valid UTF-8");
  if (replacements == 0)
    FUZZ_REQUIRE(reencoded == bytes,
                 "valid UTF-8 does not survive decode and encode");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  tokenizer = gpt2_tokenizer::load(overlord::fuzzing::gpt2_directory());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  std::size_t replacements = 0;
  const std::u32string decoded = decode_utf8_lossy(bytes, &replacements);
  check_decoder(bytes, decoded, replacements);

  const std::vector<int32_t> ids = tokenizer->encode(bytes);
  for (int32_t id : ids)
    FUZZ_REQUIRE(id >= 0 &&
                     static_cast<std::size_t>(id) < tokenizer->vocab_size() &&
                     id != tokenizer->eos_id(),
                 "id " + std::to_string(id) +
                     " is outside the vocabulary or the EOS id");
  FUZZ_REQUIRE(tokenizer->decode(ids) == encode_utf8(decoded),
               "decode(encode(bytes)) differs from the decoded text");

  // A small cache makes pieces collide in its slots.
  gpt2_piece_cache cache(4);
  FUZZ_REQUIRE(tokenizer->encode(bytes, cache) == ids,
               "encoding with a cold piece cache changed the ids");
  FUZZ_REQUIRE(tokenizer->encode(bytes, cache) == ids,
               "encoding with a warm piece cache changed the ids");
  return 0;
}
