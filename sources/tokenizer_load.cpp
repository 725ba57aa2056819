// gpt2_tokenizer::load: reads and validates encoder.json and vocab.bpe.

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "common/error.hpp"
#include "sources/tokenizer.hpp"

namespace overlord::sources {

namespace {

constexpr std::string_view eos_token_text = "<|endoftext|>";

// GPT-2 stores each token's bytes as a string of printable characters:
// bytes that are printable Latin-1 characters ('!'..'~', U+00A1..U+00AC,
// U+00AE..U+00FF) stand for themselves, and the other 68 bytes map in
// increasing order to U+0100..U+0143 (bytes_to_unicode in GPT-2's
// encoder.py). The returned table maps those code points back to bytes, and
// contains -1 for code points that stand for no byte.
std::array<int16_t, 0x144> make_unicode_to_byte() {
  std::array<int16_t, 0x144> table;
  table.fill(-1);
  char32_t next_unprintable = 0x100;
  for (int byte = 0; byte < 256; ++byte) {
    const bool printable = (byte >= '!' && byte <= '~') ||
                           (byte >= 0xA1 && byte <= 0xAC) ||
                           (byte >= 0xAE && byte <= 0xFF);
    if (printable)
      table[byte] = static_cast<int16_t>(byte);
    else
      table[next_unprintable++] = static_cast<int16_t>(byte);
  }
  return table;
}

const std::array<int16_t, 0x144> unicode_to_byte = make_unicode_to_byte();

std::string format_code_point(char32_t code_point) {
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "U+%04X",
                static_cast<unsigned>(code_point));
  return buffer;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) {
    const int saved_errno = errno;
    if (!std::filesystem::exists(path))
      throw error(errc::not_found,
                  "GPT-2 vocabulary file '" + path.string() +
                      "' not found: the vocabulary directory must contain "
                      "encoder.json and vocab.bpe from the GPT-2 release");
    throw error(errc::io_error, "cannot open GPT-2 vocabulary file '" +
                                    path.string() +
                                    "': " + std::strerror(saved_errno));
  }
  std::ostringstream contents;
  contents << stream.rdbuf();
  if (stream.bad())
    throw error(errc::io_error,
                "failed to read GPT-2 vocabulary file '" + path.string() + "'");
  return contents.str();
}

// Converts an encoder.json key from GPT-2's printable form to token bytes.
std::string key_to_bytes(const std::filesystem::path& path,
                         std::string_view key) {
  const std::u32string code_points = decode_utf8_lossy(key);
  std::string bytes;
  bytes.reserve(code_points.size());
  for (char32_t code_point : code_points) {
    const int16_t byte =
        code_point < unicode_to_byte.size() ? unicode_to_byte[code_point] : -1;
    if (byte < 0)
      throw error(errc::invalid_input,
                  "token \"" + std::string(key) + "\" in '" + path.string() +
                      "' contains " + format_code_point(code_point) +
                      ", which stands for no byte in GPT-2's byte-to-unicode "
                      "table; use the encoder.json of GPT-2");
    bytes.push_back(static_cast<char>(byte));
  }
  return bytes;
}

struct encoder_contents {
  std::vector<std::string> tokens_by_id;
  std::unordered_map<std::string, int32_t> ids_by_bytes;
  int32_t eos_id = -1;
};

encoder_contents read_encoder(const std::filesystem::path& path) {
  std::string text = read_file(path);
  rapidjson::Document document;
  document.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(),
                                                        text.size());
  if (document.HasParseError())
    throw error(errc::invalid_input,
                "'" + path.string() + "' is not valid JSON at byte offset " +
                    std::to_string(document.GetErrorOffset()) + ": " +
                    rapidjson::GetParseError_En(document.GetParseError()));
  if (!document.IsObject())
    throw error(errc::invalid_input,
                "'" + path.string() +
                    "' must contain a JSON object that maps each token to its "
                    "id");

  const std::size_t token_count = document.MemberCount();
  encoder_contents contents;
  contents.tokens_by_id.resize(token_count);
  std::vector<bool> id_seen(token_count, false);

  for (const auto& member : document.GetObject()) {
    const std::string_view key(member.name.GetString(),
                               member.name.GetStringLength());
    if (!member.value.IsInt() || member.value.GetInt() < 0 ||
        static_cast<std::size_t>(member.value.GetInt()) >= token_count)
      throw error(errc::invalid_input,
                  "token \"" + std::string(key) + "\" in '" + path.string() +
                      "' must have an integer id in [0, " +
                      std::to_string(token_count) +
                      "), because ids must number the tokens without gaps");
    const int32_t id = member.value.GetInt();
    if (id_seen[id])
      throw error(errc::invalid_input, "id " + std::to_string(id) +
                                           " appears twice in '" +
                                           path.string() + "'");
    id_seen[id] = true;

    const bool is_eos = key == eos_token_text;
    std::string bytes =
        is_eos ? std::string(eos_token_text) : key_to_bytes(path, key);
    const bool duplicate =
        is_eos ? contents.eos_id >= 0
               : !contents.ids_by_bytes.emplace(bytes, id).second;
    if (duplicate)
      throw error(errc::invalid_input,
                  "token \"" + std::string(key) + "\" appears twice in '" +
                      path.string() + "'");
    if (is_eos)
      contents.eos_id = id;
    contents.tokens_by_id[id] = std::move(bytes);
  }

  if (contents.eos_id < 0)
    throw error(errc::invalid_input,
                "'" + path.string() + "' has no \"" +
                    std::string(eos_token_text) +
                    "\" token; use the encoder.json of GPT-2");
  for (int byte = 0; byte < 256; ++byte) {
    if (contents.ids_by_bytes.count(std::string(1, static_cast<char>(byte))) ==
        0)
      throw error(errc::invalid_input,
                  "'" + path.string() + "' has no token for byte " +
                      std::to_string(byte) +
                      ", but byte-level BPE needs one for each of the 256 "
                      "bytes; use the encoder.json of GPT-2");
  }
  return contents;
}

// Checks that vocab.bpe lists the merges in the order of the ids that
// encoder.json gives their results: the merge on line k (counting merges
// from 0) must produce id 256 + k. GPT-2 merges the pair that comes first
// in vocab.bpe, and js-tiktoken merges the pair whose result has the lowest
// id. The two rules agree only when this is true.
void check_merges(const std::filesystem::path& path,
                  const encoder_contents& encoder) {
  const std::string text = read_file(path);
  std::size_t merge_count = 0;
  std::size_t line_number = 0;
  std::size_t line_begin = 0;

  while (line_begin < text.size()) {
    std::size_t line_end = text.find('\n', line_begin);
    if (line_end == std::string::npos)
      line_end = text.size();
    std::string_view line(text.data() + line_begin, line_end - line_begin);
    line_begin = line_end + 1;
    ++line_number;

    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    if (line.empty() || (line_number == 1 && line.front() == '#'))
      continue;

    const std::string where =
        "line " + std::to_string(line_number) + " of '" + path.string() + "'";
    const std::size_t space = line.find(' ');
    if (space == std::string_view::npos ||
        line.find(' ', space + 1) != std::string_view::npos)
      throw error(errc::invalid_input,
                  where + " must contain two tokens separated by one space, "
                          "but it is \"" +
                      std::string(line) + "\"");

    const std::string left = key_to_bytes(path, line.substr(0, space));
    const std::string right = key_to_bytes(path, line.substr(space + 1));
    if (encoder.ids_by_bytes.count(left) == 0 ||
        encoder.ids_by_bytes.count(right) == 0)
      throw error(errc::invalid_input,
                  where + " merges \"" + std::string(line) +
                      "\", but encoder.json lacks one of the two tokens; use "
                      "the vocab.bpe that belongs to encoder.json");

    const auto merged = encoder.ids_by_bytes.find(left + right);
    const auto expected_id = static_cast<int32_t>(256 + merge_count);
    if (merged == encoder.ids_by_bytes.end() ||
        merged->second != expected_id)
      throw error(errc::invalid_input,
                  where + " merges \"" + std::string(line) +
                      "\", whose result must have id " +
                      std::to_string(expected_id) +
                      " in encoder.json but " +
                      (merged == encoder.ids_by_bytes.end()
                           ? std::string("is missing there")
                           : "has id " + std::to_string(merged->second)) +
                      "; use the vocab.bpe that belongs to encoder.json");
    ++merge_count;
  }

  const std::size_t merged_token_count = encoder.tokens_by_id.size() - 257;
  if (merge_count != merged_token_count)
    throw error(errc::invalid_input,
                "'" + path.string() + "' lists " + std::to_string(merge_count) +
                    " merges, but encoder.json has " +
                    std::to_string(merged_token_count) +
                    " tokens besides the 256 bytes and \"" +
                    std::string(eos_token_text) +
                    "\"; use the vocab.bpe that belongs to encoder.json");
}

}  // namespace

std::shared_ptr<const gpt2_tokenizer> gpt2_tokenizer::load(
    const std::string& directory) {
  const std::filesystem::path root(directory);
  std::error_code status;
  if (!std::filesystem::is_directory(root, status))
    throw error(errc::not_found,
                "GPT-2 vocabulary directory '" + directory +
                    "' not found; pass the directory that contains "
                    "encoder.json and vocab.bpe from the GPT-2 release");

  const encoder_contents encoder = read_encoder(root / "encoder.json");
  check_merges(root / "vocab.bpe", encoder);

  auto tokenizer = std::make_shared<gpt2_tokenizer>();
  tokenizer->build(encoder.tokens_by_id, encoder.eos_id);
  return tokenizer;
}

}  // namespace overlord::sources
