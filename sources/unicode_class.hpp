// Character classes of the GPT-2 pre-tokenizer pattern, as JavaScript
// regular expressions with the `u` flag define them.
#pragma once

#include <cstdint>

namespace overlord::sources {

// The classes that the GPT-2 pattern distinguishes. `space` is JavaScript's
// \s, `letter` is \p{L} (general categories Lu, Ll, Lt, Lm, Lo) and
// `number` is \p{N} (Nd, Nl, No). Everything else is `other`.
enum class code_point_class : uint8_t { other, letter, number, space };

// Classifies `code_point`. The categories come from ICU's u_charType. For
// code points that the linked ICU reports as unassigned, the class comes from
// sources/unicode_class_table.inc, which Node.js (the reference tokenizer's
// runtime) generated, so characters added in newer Unicode versions than
// ICU's are classified as the reference classifies them. Thread-safe.
code_point_class classify_code_point(char32_t code_point);

}  // namespace overlord::sources
