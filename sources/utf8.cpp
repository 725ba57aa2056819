#include "sources/utf8.hpp"

#include <cstdint>

namespace overlord::sources {

std::u32string decode_utf8_lossy(std::string_view bytes,
                                 std::size_t* replacements) {
  std::u32string out;
  out.reserve(bytes.size());
  std::size_t replacement_count = 0;

  // This follows the WHATWG "UTF-8 decoder" algorithm step by step. After a
  // lead byte, `lower` and `upper` bound the next continuation byte: the
  // narrower ranges after E0, ED, F0 and F4 reject overlong forms,
  // surrogates and code points above U+10FFFF at the first byte that makes
  // them so. A byte outside the bounds ends the sequence with one U+FFFD and
  // is then decoded again as the possible start of a new sequence.
  char32_t code_point = 0;
  int bytes_needed = 0;
  int bytes_seen = 0;
  uint8_t lower = 0x80;
  uint8_t upper = 0xBF;

  std::size_t i = 0;
  while (i < bytes.size()) {
    const auto byte = static_cast<uint8_t>(bytes[i]);

    if (bytes_needed == 0) {
      ++i;
      if (byte <= 0x7F) {
        out.push_back(byte);
      } else if (byte >= 0xC2 && byte <= 0xDF) {
        bytes_needed = 1;
        code_point = byte & 0x1F;
      } else if (byte >= 0xE0 && byte <= 0xEF) {
        if (byte == 0xE0)
          lower = 0xA0;
        if (byte == 0xED)
          upper = 0x9F;
        bytes_needed = 2;
        code_point = byte & 0x0F;
      } else if (byte >= 0xF0 && byte <= 0xF4) {
        if (byte == 0xF0)
          lower = 0x90;
        if (byte == 0xF4)
          upper = 0x8F;
        bytes_needed = 3;
        code_point = byte & 0x07;
      } else {
        out.push_back(replacement_character);
        ++replacement_count;
      }
      continue;
    }

    if (byte < lower || byte > upper) {
      // Leave `i` on this byte so that the next iteration decodes it anew.
      code_point = 0;
      bytes_needed = 0;
      bytes_seen = 0;
      lower = 0x80;
      upper = 0xBF;
      out.push_back(replacement_character);
      ++replacement_count;
      continue;
    }

    ++i;
    lower = 0x80;
    upper = 0xBF;
    code_point = (code_point << 6) | (byte & 0x3F);
    ++bytes_seen;
    if (bytes_seen == bytes_needed) {
      out.push_back(code_point);
      code_point = 0;
      bytes_needed = 0;
      bytes_seen = 0;
    }
  }

  // A sequence cut short by the end of the input becomes one U+FFFD.
  if (bytes_needed != 0) {
    out.push_back(replacement_character);
    ++replacement_count;
  }

  if (replacements != nullptr)
    *replacements = replacement_count;
  return out;
}

std::string_view strip_utf8_bom(std::string_view bytes) {
  if (bytes.size() >= 3 && bytes.substr(0, 3) == "\xEF\xBB\xBF")
    bytes.remove_prefix(3);
  return bytes;
}

void append_utf8(std::string& out, char32_t code_point) {
  if ((code_point >= 0xD800 && code_point <= 0xDFFF) || code_point > 0x10FFFF)
    code_point = replacement_character;

  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

std::string encode_utf8(std::u32string_view code_points) {
  std::string out;
  out.reserve(code_points.size());
  for (char32_t code_point : code_points)
    append_utf8(out, code_point);
  return out;
}

}  // namespace overlord::sources
