// UTF-8 decoding and encoding with the error handling of the WHATWG
// Encoding Standard, which Node.js's TextDecoder implements. The GPT-2
// tokenizer needs it because its reference (js-tiktoken in Node.js) only
// receives text that TextDecoder has already decoded.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace overlord::sources {

// The code point that replaces each invalid UTF-8 subsequence.
inline constexpr char32_t replacement_character = 0xFFFD;

// Decodes UTF-8 to code points as `new TextDecoder("utf-8", {ignoreBOM:
// true}).decode(bytes)` does: one U+FFFD for each maximal subpart of an
// invalid sequence. Stray continuation bytes, C0, C1 and F5..FF lead bytes,
// overlong forms (E0 80..9F, F0 80..8F), UTF-16 surrogates encoded in UTF-8
// (ED A0..BF) and code points above U+10FFFF (F4 90..BF) are invalid. So is a
// sequence cut short by the next byte or by the end of the input.
//
// A leading byte order mark is kept as U+FEFF. TextDecoder's default options
// drop it, so callers that decode a whole file should call strip_utf8_bom
// first. If `replacements` is not null, it receives the number of U+FFFD
// characters that replaced invalid input.
std::u32string decode_utf8_lossy(std::string_view bytes,
                                 std::size_t* replacements = nullptr);

// Returns `bytes` without a leading UTF-8 byte order mark (EF BB BF), the one
// step that TextDecoder's default options add to decode_utf8_lossy.
std::string_view strip_utf8_bom(std::string_view bytes);

// Appends the UTF-8 encoding of `code_point` to `out`. Surrogates and values
// above U+10FFFF are written as U+FFFD, as the WHATWG TextEncoder does for
// lone surrogates.
void append_utf8(std::string& out, char32_t code_point);

// Encodes code points to UTF-8 with append_utf8.
std::string encode_utf8(std::u32string_view code_points);

}  // namespace overlord::sources
