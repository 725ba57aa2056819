// overlord_tokenize: prints the GPT-2 token ids of documents, one line of
// space-separated ids per document. tools/reference/tokenize.mjs prints the
// same lines with js-tiktoken, and tests/tokenizer_parity.sh compares them.
//
//   overlord_tokenize --vocab DIR [--jsonl-field NAME] [FILE...]
//
// Each FILE is one document, or with --jsonl-field each non-blank line of a
// FILE is a JSON object whose string field NAME is one document. Without a
// FILE the tool reads standard input.

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "sources/tokenizer.hpp"

namespace {

using overlord::errc;
using overlord::error;
using overlord::sources::gpt2_piece_cache;
using overlord::sources::gpt2_tokenizer;

constexpr const char* usage_text =
    "usage: overlord_tokenize --vocab DIR [--jsonl-field NAME] [FILE...]\n"
    "\n"
    "Prints the GPT-2 token ids of each document as one line of\n"
    "space-separated ids. Reads standard input when no FILE is given.\n"
    "\n"
    "  --vocab DIR          directory with GPT-2's encoder.json and vocab.bpe\n"
    "  --jsonl-field NAME   treat each FILE as JSON Lines and tokenize the\n"
    "                       string field NAME of every record, one output\n"
    "                       line per record; blank lines are skipped\n"
    "  --help               print this help\n"
    "\n"
    "A leading UTF-8 byte order mark of a FILE is dropped, as Node.js's\n"
    "TextDecoder drops it. The text \"<|endoftext|>\" is tokenized as\n"
    "ordinary text.\n";

struct options {
  std::string vocab_directory;
  std::optional<std::string> jsonl_field;
  std::vector<std::string> files;
};

// Thrown for an invalid command line, which exits with status 2.
struct usage_error {
  std::string message;
};

options parse_options(int argc, char** argv) {
  options parsed;
  bool vocab_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    const bool takes_value =
        argument == "--vocab" || argument == "--jsonl-field";
    if (takes_value && i + 1 >= argc)
      throw usage_error{argument + " needs a value"};

    if (argument == "--help" || argument == "-h") {
      std::cout << usage_text;
      std::exit(0);
    } else if (argument == "--vocab") {
      parsed.vocab_directory = argv[++i];
      vocab_given = true;
    } else if (argument == "--jsonl-field") {
      parsed.jsonl_field = argv[++i];
    } else if (argument.size() > 1 && argument[0] == '-') {
      throw usage_error{"unknown option '" + argument + "'"};
    } else {
      parsed.files.push_back(argument);
    }
  }
  if (!vocab_given)
    throw usage_error{"--vocab DIR is required"};
  return parsed;
}

std::string read_input(const std::string& file) {
  if (file == "-") {
    std::string contents((std::istreambuf_iterator<char>(std::cin)),
                         std::istreambuf_iterator<char>());
    if (std::cin.bad())
      throw error(errc::io_error, "failed to read standard input");
    return contents;
  }

  std::error_code status;
  if (std::filesystem::is_directory(file, status))
    throw error(errc::invalid_input,
                "input '" + file + "' is a directory; pass a file");
  std::ifstream stream(file, std::ios::binary);
  if (!stream) {
    const int saved_errno = errno;
    throw error(saved_errno == ENOENT ? errc::not_found : errc::io_error,
                "cannot open input file '" + file +
                    "': " + std::strerror(saved_errno));
  }
  std::ostringstream contents;
  contents << stream.rdbuf();
  if (stream.bad())
    throw error(errc::io_error, "failed to read input file '" + file + "'");
  return contents.str();
}

class id_line_writer {
 public:
  void write(const std::vector<int32_t>& ids) {
    line_.clear();
    char number[16];
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (i != 0)
        line_.push_back(' ');
      const auto result = std::to_chars(number, number + sizeof number, ids[i]);
      line_.append(number, result.ptr);
    }
    line_.push_back('\n');
    if (std::fwrite(line_.data(), 1, line_.size(), stdout) != line_.size())
      throw error(errc::io_error, std::string("failed to write standard "
                                              "output: ") +
                                      std::strerror(errno));
  }

 private:
  std::string line_;
};

bool is_hex_digit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F');
}

// Returns the value of the \uXXXX escape at `position`, or -1 if there is
// none.
long parse_unicode_escape(std::string_view text, std::size_t position) {
  if (position + 6 > text.size() || text[position] != '\\' ||
      text[position + 1] != 'u')
    return -1;
  for (std::size_t i = position + 2; i < position + 6; ++i) {
    if (!is_hex_digit(text[i]))
      return -1;
  }
  return std::strtol(std::string(text.substr(position + 2, 4)).c_str(),
                     nullptr, 16);
}

// Rewrites \uD800..\uDFFF escapes that are not part of a surrogate pair to
// \uFFFD, because RapidJSON rejects lone surrogates. The rewrite keeps the
// reference's ids: JSON.parse keeps a lone surrogate in the JavaScript
// string, where the GPT-2 pattern classifies it like U+FFFD as neither
// letter, number nor space. TextEncoder then writes it as the bytes of
// U+FFFD.
std::string replace_lone_surrogate_escapes(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  std::size_t i = 0;
  while (i < line.size()) {
    if (line[i] != '\\' || i + 1 >= line.size()) {
      out.push_back(line[i++]);
      continue;
    }
    const long value = parse_unicode_escape(line, i);
    if (value < 0) {
      // Another escape such as \\ or \": copy both characters so that an
      // escaped backslash is not read as the start of an escape.
      out.append(line.substr(i, 2));
      i += 2;
      continue;
    }

    const bool high = value >= 0xD800 && value <= 0xDBFF;
    const bool low = value >= 0xDC00 && value <= 0xDFFF;
    const long next = high ? parse_unicode_escape(line, i + 6) : -1;
    if (high && next >= 0xDC00 && next <= 0xDFFF) {
      out.append(line.substr(i, 12));
      i += 12;
    } else if (high || low) {
      out.append("\\uFFFD");
      i += 6;
    } else {
      out.append(line.substr(i, 6));
      i += 6;
    }
  }
  return out;
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

void tokenize_jsonl(const std::string& name, std::string_view contents,
                    const std::string& field, const gpt2_tokenizer& tokenizer,
                    gpt2_piece_cache& cache, id_line_writer& writer) {
  std::size_t line_number = 0;
  std::size_t line_begin = 0;
  while (line_begin < contents.size()) {
    std::size_t line_end = contents.find('\n', line_begin);
    if (line_end == std::string_view::npos)
      line_end = contents.size();
    const std::string_view line =
        contents.substr(line_begin, line_end - line_begin);
    line_begin = line_end + 1;
    ++line_number;
    if (is_blank(line))
      continue;

    const std::string where =
        "line " + std::to_string(line_number) + " of '" + name + "'";
    const std::string json = replace_lone_surrogate_escapes(line);
    rapidjson::Document record;
    record.Parse(json.data(), json.size());
    if (record.HasParseError())
      throw error(errc::invalid_input,
                  where + " is not valid JSON at byte offset " +
                      std::to_string(record.GetErrorOffset()) + ": " +
                      rapidjson::GetParseError_En(record.GetParseError()));
    if (!record.IsObject())
      throw error(errc::invalid_input, where + " is not a JSON object");
    const auto member = record.FindMember(field.c_str());
    if (member == record.MemberEnd() || !member->value.IsString())
      throw error(errc::invalid_input,
                  where + " has no string field \"" + field +
                      "\"; check --jsonl-field");

    const std::string_view text(member->value.GetString(),
                                member->value.GetStringLength());
    writer.write(tokenizer.encode(text, cache));
  }
}

int run(const options& parsed) {
  const auto tokenizer = gpt2_tokenizer::load(parsed.vocab_directory);
  gpt2_piece_cache cache;
  id_line_writer writer;

  std::vector<std::string> files = parsed.files;
  if (files.empty())
    files.push_back("-");

  for (const std::string& file : files) {
    const std::string contents = read_input(file);
    const std::string name = file == "-" ? "standard input" : file;
    // Node.js's TextDecoder drops a leading byte order mark by default.
    const std::string_view text =
        overlord::sources::strip_utf8_bom(contents);
    if (parsed.jsonl_field)
      tokenize_jsonl(name, text, *parsed.jsonl_field, *tokenizer, cache,
                     writer);
    else
      writer.write(tokenizer->encode(text, cache));
  }

  if (std::fflush(stdout) != 0)
    throw error(errc::io_error, std::string("failed to write standard "
                                            "output: ") +
                                    std::strerror(errno));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  options parsed;
  try {
    parsed = parse_options(argc, argv);
  } catch (const usage_error& failure) {
    std::cerr << "overlord_tokenize: " << failure.message << "\n\n"
              << usage_text;
    return 2;
  }

  try {
    return run(parsed);
  } catch (const overlord::error& failure) {
    std::cerr << "overlord_tokenize: error: " << failure.what() << "\n";
    return 1;
  }
}
