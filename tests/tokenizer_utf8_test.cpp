// decode_utf8_lossy must match Node.js's TextDecoder (WHATWG UTF-8 decoder)
// character for character, because the reference tokenizer receives text
// only after TextDecoder has decoded it.

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "sources/utf8.hpp"

namespace {

using overlord::sources::append_utf8;
using overlord::sources::decode_utf8_lossy;
using overlord::sources::encode_utf8;
using overlord::sources::strip_utf8_bom;

constexpr char32_t fffd = 0xFFFD;

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int value : values)
    out.push_back(static_cast<char>(value));
  return out;
}

struct decode_case {
  const char* name;
  std::string input;
  std::u32string expected;
  std::size_t replacements;
};

}  // namespace

TEST_CASE("decode_utf8_lossy valid boundary code points", "[utf8]") {
  const std::vector<decode_case> cases = {
      {"ASCII", "Az~\x7F", U"Az~\x7F", 0},
      {"NUL", std::string(1, '\0'), std::u32string(1, U'\0'), 0},
      {"U+0080", bytes({0xC2, 0x80}), U"\u0080", 0},
      {"U+07FF", bytes({0xDF, 0xBF}), U"\u07FF", 0},
      {"U+0800", bytes({0xE0, 0xA0, 0x80}), U"\u0800", 0},
      {"U+D7FF", bytes({0xED, 0x9F, 0xBF}), U"\uD7FF", 0},
      {"U+E000", bytes({0xEE, 0x80, 0x80}), U"\uE000", 0},
      {"U+FFFF", bytes({0xEF, 0xBF, 0xBF}), U"\uFFFF", 0},
      {"U+10000", bytes({0xF0, 0x90, 0x80, 0x80}), U"\U00010000", 0},
      {"U+10FFFF", bytes({0xF4, 0x8F, 0xBF, 0xBF}), U"\U0010FFFF", 0},
      {"U+FFFD itself", bytes({0xEF, 0xBF, 0xBD}), U"\uFFFD", 0},
  };
  for (const auto& test : cases) {
    INFO(test.name);
    std::size_t replacements = 99;
    CHECK(decode_utf8_lossy(test.input, &replacements) == test.expected);
    CHECK(replacements == test.replacements);
  }
}

TEST_CASE("decode_utf8_lossy invalid forms", "[utf8]") {
  // One U+FFFD per maximal subpart: a lead byte and the continuation bytes
  // that could still start a valid sequence. The byte that breaks a
  // sequence is decoded again on its own.
  const std::vector<decode_case> cases = {
      {"lone continuation byte", bytes({0x80}), {fffd}, 1},
      {"two continuation bytes", bytes({0x80, 0xBF}), {fffd, fffd}, 2},
      {"overlong C0 AF", bytes({0xC0, 0xAF}), {fffd, fffd}, 2},
      {"overlong C1 BF", bytes({0xC1, 0xBF}), {fffd, fffd}, 2},
      {"overlong E0 80 AF", bytes({0xE0, 0x80, 0xAF}), {fffd, fffd, fffd}, 3},
      {"overlong F0 80 80 AF",
       bytes({0xF0, 0x80, 0x80, 0xAF}),
       {fffd, fffd, fffd, fffd},
       4},
      {"surrogate U+D800 ED A0 80",
       bytes({0xED, 0xA0, 0x80}),
       {fffd, fffd, fffd},
       3},
      {"surrogate U+DFFF ED BF BF",
       bytes({0xED, 0xBF, 0xBF}),
       {fffd, fffd, fffd},
       3},
      {"surrogate pair as two sequences",
       bytes({0xED, 0xA0, 0xBD, 0xED, 0xB8, 0x80}),
       {fffd, fffd, fffd, fffd, fffd, fffd},
       6},
      {"above U+10FFFF F4 90 80 80",
       bytes({0xF4, 0x90, 0x80, 0x80}),
       {fffd, fffd, fffd, fffd},
       4},
      {"lead byte F5", bytes({0xF5, 0x80}), {fffd, fffd}, 2},
      {"five-byte form F8 88 80 80 80",
       bytes({0xF8, 0x88, 0x80, 0x80, 0x80}),
       {fffd, fffd, fffd, fffd, fffd},
       5},
      {"bytes FE FF", bytes({0xFE, 0xFF}), {fffd, fffd}, 2},
      {"two-byte lead then ASCII", bytes({0xC2, 0x41}), {fffd, U'A'}, 1},
      {"three-byte prefix then ASCII",
       bytes({0xE2, 0x82, 0x41}),
       {fffd, U'A'},
       1},
      {"four-byte prefix then ASCII",
       bytes({0xF0, 0x9F, 0x98, 0x41}),
       {fffd, U'A'},
       1},
      {"prefix broken by another lead byte",
       bytes({0xE2, 0x82, 0xE2, 0x82, 0xAC}),
       {fffd, U'\u20AC'},
       1},
      {"E2 28 A1", bytes({0xE2, 0x28, 0xA1}), {fffd, U'(', fffd}, 2},
      {"truncated two-byte at end", bytes({0x41, 0xC2}), {U'A', fffd}, 1},
      {"truncated three-byte at end", bytes({0x41, 0xE2, 0x82}), {U'A', fffd}, 1},
      {"truncated emoji at end",
       bytes({0x41, 0xF0, 0x9F, 0x98}),
       {U'A', fffd},
       1},
  };
  for (const auto& test : cases) {
    INFO(test.name);
    std::size_t replacements = 99;
    CHECK(decode_utf8_lossy(test.input, &replacements) == test.expected);
    CHECK(replacements == test.replacements);
  }
}

TEST_CASE("decode_utf8_lossy keeps byte order mark", "[utf8]") {
  const std::string input = bytes({0xEF, 0xBB, 0xBF, 0x41});
  CHECK(decode_utf8_lossy(input) == U"\uFEFFA");
  CHECK(decode_utf8_lossy(input, nullptr) == U"\uFEFFA");
}

TEST_CASE("strip_utf8_bom removes one leading mark", "[utf8]") {
  const std::string bom = bytes({0xEF, 0xBB, 0xBF});
  CHECK(strip_utf8_bom(bom + "x") == "x");
  CHECK(strip_utf8_bom(bom + bom + "x") == bom + "x");
  CHECK(strip_utf8_bom("x" + bom) == "x" + bom);
  CHECK(strip_utf8_bom(bytes({0xEF, 0xBB})) == bytes({0xEF, 0xBB}));
  CHECK(strip_utf8_bom("").empty());
}

TEST_CASE("append_utf8 encodes and replaces surrogates", "[utf8]") {
  std::string out;
  append_utf8(out, U'\u00E9');
  CHECK(out == bytes({0xC3, 0xA9}));

  out.clear();
  append_utf8(out, 0xD800);
  CHECK(out == bytes({0xEF, 0xBF, 0xBD}));

  out.clear();
  append_utf8(out, 0x110000);
  CHECK(out == bytes({0xEF, 0xBF, 0xBD}));

  const std::u32string text = U"a\u0080\u07FF\u0800\uFFFF\U00010000\U0010FFFF";
  CHECK(decode_utf8_lossy(encode_utf8(text)) == text);
}
