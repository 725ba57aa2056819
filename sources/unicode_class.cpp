#include "sources/unicode_class.hpp"

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <iterator>

namespace overlord::sources {

namespace {

struct code_point_range {
  char32_t first;
  char32_t last;
  code_point_class value;
};

// \p{L} and \p{N} in the reference's Node.js. Code points outside every
// range are in neither class.
constexpr code_point_range node_letter_number_ranges[] = {
#include "sources/unicode_class_table.inc"
};

// JavaScript's \s is WhiteSpace plus LineTerminator (ECMAScript, sections
// "White Space" and "Line Terminators"): TAB, LF, VT, FF, CR, U+2028,
// U+2029, ZWNBSP (U+FEFF) and every Zs character. NEL (U+0085) is Cc, so \s
// does not contain it.
bool is_javascript_space(char32_t code_point, int8_t category) {
  switch (code_point) {
    case 0x09:
    case 0x0A:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x2028:
    case 0x2029:
    case 0xFEFF:
      return true;
    default:
      return category == U_SPACE_SEPARATOR;
  }
}

code_point_class classify_unassigned(char32_t code_point) {
  const auto* begin = std::begin(node_letter_number_ranges);
  const auto* end = std::end(node_letter_number_ranges);
  const auto* found = std::upper_bound(
      begin, end, code_point,
      [](char32_t value, const code_point_range& range) {
        return value < range.first;
      });
  if (found == begin)
    return code_point_class::other;
  --found;
  if (code_point <= found->last)
    return found->value;
  return code_point_class::other;
}

code_point_class classify_with_icu(char32_t code_point) {
  const int8_t category = u_charType(static_cast<UChar32>(code_point));
  if (is_javascript_space(code_point, category))
    return code_point_class::space;

  switch (category) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return code_point_class::letter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return code_point_class::number;
    case U_UNASSIGNED:
      // NOTE: only unassigned code points fall back to the table. If the
      // linked ICU is newer than the table's Unicode version and moves an
      // assigned character to another category, ICU's category is used.
      return classify_unassigned(code_point);
    default:
      return code_point_class::other;
  }
}

// ASCII needs no ICU call: the tokenizer classifies most characters of
// English text through this table.
constexpr std::array<code_point_class, 128> make_ascii_classes() {
  std::array<code_point_class, 128> classes{};
  for (char32_t code_point = 0; code_point < 128; ++code_point) {
    if ((code_point >= 0x09 && code_point <= 0x0D) || code_point == ' ')
      classes[code_point] = code_point_class::space;
    else if ((code_point >= 'a' && code_point <= 'z') ||
             (code_point >= 'A' && code_point <= 'Z'))
      classes[code_point] = code_point_class::letter;
    else if (code_point >= '0' && code_point <= '9')
      classes[code_point] = code_point_class::number;
    else
      classes[code_point] = code_point_class::other;
  }
  return classes;
}

constexpr std::array<code_point_class, 128> ascii_classes =
    make_ascii_classes();

}  // namespace

code_point_class classify_code_point(char32_t code_point) {
  if (code_point < 128)
    return ascii_classes[code_point];
  if (code_point > 0x10FFFF)
    return code_point_class::other;
  return classify_with_icu(code_point);
}

}  // namespace overlord::sources
