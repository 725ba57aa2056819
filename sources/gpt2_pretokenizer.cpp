#include "sources/gpt2_pretokenizer.hpp"

namespace overlord::sources {

namespace {

// Returns the length of the contraction at `begin`, or 0 if none starts there.
std::size_t match_contraction(std::u32string_view text, std::size_t begin) {
  if (text[begin] != U'\'' || begin + 1 >= text.size())
    return 0;

  const char32_t first = text[begin + 1];
  if (first == U's' || first == U't' || first == U'm' || first == U'd')
    return 2;

  if (begin + 2 >= text.size())
    return 0;
  const char32_t second = text[begin + 2];
  if ((first == U'r' && second == U'e') || (first == U'v' && second == U'e') ||
      (first == U'l' && second == U'l'))
    return 3;
  return 0;
}

std::size_t skip_class(std::u32string_view text, std::size_t position,
                       code_point_class run_class) {
  while (position < text.size() &&
         classify_code_point(text[position]) == run_class)
    ++position;
  return position;
}

}  // namespace

std::size_t find_gpt2_piece_end(std::u32string_view text, std::size_t begin) {
  if (const std::size_t length = match_contraction(text, begin); length != 0)
    return begin + length;

  // ` ?\p{L}+`, ` ?\p{N}+` and ` ?[^\s\p{L}\p{N}]+`: a leading U+0020 joins
  // the run only if a non-\s character follows it.
  std::size_t run_begin = begin;
  if (text[begin] == U' ' && begin + 1 < text.size() &&
      classify_code_point(text[begin + 1]) != code_point_class::space)
    run_begin = begin + 1;

  const code_point_class run_class = classify_code_point(text[run_begin]);
  if (run_class != code_point_class::space)
    return skip_class(text, run_begin + 1, run_class);

  // `\s+(?!\S)` and then `\s+`.
  const std::size_t run_end =
      skip_class(text, begin + 1, code_point_class::space);
  if (run_end == text.size())
    return run_end;
  if (run_end - begin >= 2)
    return run_end - 1;
  return run_end;
}

std::vector<text_piece> split_gpt2_pieces(std::u32string_view text) {
  std::vector<text_piece> pieces;
  std::size_t begin = 0;
  while (begin < text.size()) {
    const std::size_t end = find_gpt2_piece_end(text, begin);
    pieces.push_back({begin, end});
    begin = end;
  }
  return pieces;
}

}  // namespace overlord::sources
