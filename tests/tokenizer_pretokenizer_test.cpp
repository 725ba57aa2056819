// The GPT-2 pre-tokenizer must split text exactly as this JavaScript regular
// expression with the `u` flag does:
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// Each expected split below was checked with String.prototype.matchAll in
// Node.js 20.20.

#include <catch2/catch.hpp>

#include <cstdio>
#include <string>
#include <vector>

#include "sources/gpt2_pretokenizer.hpp"
#include "sources/unicode_class.hpp"
#include "sources/utf8.hpp"
#include "tests/tokenizer_test_support.hpp"

namespace {

using overlord::sources::classify_code_point;
using overlord::sources::code_point_class;
using overlord::sources::decode_utf8_lossy;
using overlord::sources::encode_utf8;
using overlord::sources::split_gpt2_pieces;
using overlord::sources::testing::fixture_path;
using overlord::sources::testing::read_bytes;
using overlord::sources::testing::utf8;

std::vector<std::string> split(const std::string& text) {
  const std::u32string code_points = decode_utf8_lossy(text);
  std::vector<std::string> pieces;
  for (const auto& piece : split_gpt2_pieces(code_points))
    pieces.push_back(encode_utf8(std::u32string_view(code_points)
                                     .substr(piece.begin, piece.end - piece.begin)));
  return pieces;
}

using pieces = std::vector<std::string>;

struct split_case {
  std::string input;
  pieces expected;
};

void check_cases(const std::vector<split_case>& cases) {
  for (const auto& test : cases) {
    INFO("input: \"" << test.input << "\"");
    CHECK(split(test.input) == test.expected);
  }
}

}  // namespace

TEST_CASE("pre-tokenizer contractions", "[pretokenizer]") {
  check_cases({
      {"it's", {"it", "'s"}},
      {"they'll", {"they", "'ll"}},
      {"we've", {"we", "'ve"}},
      {"I'm", {"I", "'m"}},
      {"she'd", {"she", "'d"}},
      {"don't", {"don", "'t"}},
      {"you're", {"you", "'re"}},
      {"'ll've'd", {"'ll", "'ve", "'d"}},
      // Case-sensitive: 'S and 'LL are no contractions.
      {"IT'S", {"IT", "'", "S"}},
      {"'LL", {"'", "LL"}},
      // Only the ASCII apostrophe, not U+2019.
      {utf8(u8"it\u2019s"), {"it", utf8(u8"\u2019"), "s"}},
      // The contraction matches even where a word goes on.
      {"'sun", {"'s", "un"}},
      // A punctuation run that starts earlier swallows the apostrophe.
      {"?'s", {"?'", "s"}},
      {" 's", {" '", "s"}},
  });
}

TEST_CASE("pre-tokenizer whitespace before words", "[pretokenizer]") {
  check_cases({
      {"Hello world", {"Hello", " world"}},
      // \s+(?!\S) leaves the last space of a run to the next word.
      {"a  b", {"a", " ", " b"}},
      {"a   b", {"a", "  ", " b"}},
      {"a \n b", {"a", " \n", " b"}},
      {"x  \n\ny", {"x", "  \n", "\n", "y"}},
      // A lone non-space whitespace before a word is a piece of its own.
      {"a\n\nb", {"a", "\n", "\n", "b"}},
      {"x\t y", {"x", "\t", " y"}},
      {"a\r\n\r\nb", {"a", "\r\n\r", "\n", "b"}},
      {"  !x", {" ", " !", "x"}},
      // A run at the end of the text stays whole.
      {"end   ", {"end", "   "}},
      {"   ", {"   "}},
      {" ", {" "}},
      {"\n", {"\n"}},
      {"", {}},
  });
}

TEST_CASE("pre-tokenizer numbers and punctuation", "[pretokenizer]") {
  check_cases({
      {"abc123def", {"abc", "123", "def"}},
      {" 2024", {" 2024"}},
      {"3.14", {"3", ".", "14"}},
      {"1,000", {"1", ",", "000"}},
      {"123abc 456", {"123", "abc", " 456"}},
      {"Hello!!! ...", {"Hello", "!!!", " ..."}},
      {"(((x)))", {"(((", "x", ")))"}},
      {" !x", {" !", "x"}},
      // \p{N} includes No and Nl, not only ASCII digits.
      {utf8(u8"a \u00BD"), {"a", utf8(u8" \u00BD")}},
      {utf8(u8"\u216B\u00B2"), {utf8(u8"\u216B\u00B2")}},
  });
}

TEST_CASE("pre-tokenizer non-ASCII text", "[pretokenizer]") {
  check_cases({
      {utf8(u8"na\u00EFve caf\u00E9"), {utf8(u8"na\u00EFve"), utf8(u8" caf\u00E9")}},
      {utf8(u8"\u0395\u03BB\u03BB\u03B7\u03BD\u03B9\u03BA\u03AC"),
       {utf8(u8"\u0395\u03BB\u03BB\u03B7\u03BD\u03B9\u03BA\u03AC")}},
      {utf8(u8"\u4E2D\u6587\uFF0C\u5B57"),
       {utf8(u8"\u4E2D\u6587"), utf8(u8"\uFF0C"), utf8(u8"\u5B57")}},
      // A combining mark (Mn) is neither letter nor number.
      {utf8(u8"e\u0301"), {"e", utf8(u8"\u0301")}},
      // Emoji, skin tones and ZWJ are all "other", so they form one run.
      {utf8(u8"hi \U0001F44B\U0001F3FD!"), {"hi", utf8(u8" \U0001F44B\U0001F3FD!")}},
      {utf8(u8"\U0001F468\u200D\U0001F469\u200D\U0001F467"),
       {utf8(u8"\U0001F468\u200D\U0001F469\u200D\U0001F467")}},
      {utf8(u8"a\uFFFDb"), {"a", utf8(u8"\uFFFD"), "b"}},
      // U+1E5D0 (Ol Onal, Unicode 16) is a letter although ICU 72 does not
      // know it.
      {utf8(u8"x\U0001E5D0y"), {utf8(u8"x\U0001E5D0y")}},
  });
}

TEST_CASE("pre-tokenizer JavaScript space set", "[pretokenizer]") {
  check_cases({
      // U+FEFF is in JavaScript's \s.
      {utf8(u8"a\uFEFFb"), {"a", utf8(u8"\uFEFF"), "b"}},
      {utf8(u8"a \uFEFFb"), {"a", " ", utf8(u8"\uFEFF"), "b"}},
      // U+0085 (NEL) is not, so it joins punctuation runs.
      {utf8(u8"a\u0085b"), {"a", utf8(u8"\u0085"), "b"}},
      {utf8(u8" \u0085x"), {utf8(u8" \u0085"), "x"}},
      // No-break and ideographic spaces are \s, but only U+0020 joins a word.
      {utf8(u8"a\u00A0b"), {"a", utf8(u8"\u00A0"), "b"}},
      {utf8(u8"a\u00A0 b"), {"a", utf8(u8"\u00A0"), " b"}},
      {utf8(u8"a\u3000\u3000b"),
       {"a", utf8(u8"\u3000"), utf8(u8"\u3000"), "b"}},
  });
}

TEST_CASE("pre-tokenizer pieces cover the text", "[pretokenizer]") {
  const std::string text = read_bytes(fixture_path("inputs/whitespace.txt")) +
                           read_bytes(fixture_path("inputs/emoji.txt")) +
                           read_bytes(fixture_path("inputs/contractions.txt"));
  const std::u32string code_points = decode_utf8_lossy(text);
  const auto found = split_gpt2_pieces(code_points);
  REQUIRE_FALSE(found.empty());
  CHECK(found.front().begin == 0);
  CHECK(found.back().end == code_points.size());
  for (std::size_t i = 0; i < found.size(); ++i) {
    INFO("piece " << i);
    CHECK(found[i].begin < found[i].end);
    if (i > 0)
      CHECK(found[i].begin == found[i - 1].end);
  }
}

TEST_CASE("code point classes match Node.js", "[pretokenizer]") {
  // code_point_classes.txt lists Node.js's \p{L}, \p{N} and \s ranges. Every
  // code point outside them must classify as `other`.
  std::vector<code_point_class> expected(0x110000, code_point_class::other);
  const std::string table = read_bytes(fixture_path("code_point_classes.txt"));
  std::size_t range_count = 0;
  std::size_t line_begin = 0;
  while (line_begin < table.size()) {
    std::size_t line_end = table.find('\n', line_begin);
    if (line_end == std::string::npos)
      line_end = table.size();
    const std::string line = table.substr(line_begin, line_end - line_begin);
    line_begin = line_end + 1;
    if (line.empty() || line[0] == '#')
      continue;

    unsigned first = 0;
    unsigned last = 0;
    char name[16] = {};
    REQUIRE(std::sscanf(line.c_str(), "%x %x %15s", &first, &last, name) == 3);
    const std::string class_name = name;
    code_point_class value = code_point_class::other;
    if (class_name == "letter")
      value = code_point_class::letter;
    else if (class_name == "number")
      value = code_point_class::number;
    else if (class_name == "space")
      value = code_point_class::space;
    else
      FAIL("unknown class in code_point_classes.txt: " << line);
    REQUIRE(last < expected.size());
    for (unsigned code_point = first; code_point <= last; ++code_point)
      expected[code_point] = value;
    ++range_count;
  }
  REQUIRE(range_count > 500);

  std::size_t mismatches = 0;
  for (char32_t code_point = 0; code_point < expected.size(); ++code_point) {
    if (classify_code_point(code_point) == expected[code_point])
      continue;
    if (++mismatches <= 10)
      FAIL_CHECK("code point U+" << std::hex << std::uppercase
                                  << static_cast<unsigned>(code_point)
                                  << std::dec << " classified as "
                                  << static_cast<int>(classify_code_point(code_point))
                                  << ", Node.js has "
                                  << static_cast<int>(expected[code_point]));
  }
  CHECK(mismatches == 0);
}
