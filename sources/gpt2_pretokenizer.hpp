// The GPT-2 pre-tokenizer: splits text into the pieces that byte pair
// encoding then encodes one at a time. It reproduces what the JavaScript
// regular expression
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// with the `u` and `g` flags matches (js-tiktoken's "gpt2" pattern), written
// as a state machine over code points instead of a regular expression.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "sources/unicode_class.hpp"

namespace overlord::sources {

// A half-open range [begin, end) of code point indices into the text.
struct text_piece {
  std::size_t begin;
  std::size_t end;
};

// Returns the end of the piece that starts at `begin` (< text.size()). Every
// piece is non-empty and pieces cover the text without gaps, so calling this
// from 0 and then from each returned end walks the whole text. Thread-safe.
//
// The alternatives are tried in the pattern's order, and the first one that
// matches wins:
// 1. The contractions 's 't 're 've 'm 'll 'd, case-sensitive and with the
//    ASCII apostrophe U+0027 only.
// 2. An optional U+0020 space and then a run of letters, of numbers, or of
//    characters that are neither letters, numbers nor \s.
// 3. A run of \s characters. If a non-\s character follows a run of two or
//    more, the last one is left out, because (?!\S) fails after it, so that
//    character starts the next piece (and a U+0020 there joins the word after
//    it). A single \s character before a non-\s character is a piece of its
//    own (the final \s+ alternative).
std::size_t find_gpt2_piece_end(std::u32string_view text, std::size_t begin);

// Splits `text` into its pieces in order. Thread-safe.
std::vector<text_piece> split_gpt2_pieces(std::u32string_view text);

}  // namespace overlord::sources
