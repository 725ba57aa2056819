#include "sources/reader.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.hpp"

namespace fs = std::filesystem;

namespace overlord::sources {

namespace {

class shard_reader {
 public:
  shard_reader(const std::string& shard_name, const reader_options& options)
      : shard_name_(shard_name), options_(options) {}

  void reject(const std::string& kind, const std::string& where,
              const std::string& detail) {
    if (options_.fail_on_bad_input)
      throw error(errc::invalid_input,
                  where + ": " + kind + ": " + detail +
                      " (on_bad_input is fail; fix the data or set "
                      "on_bad_input: skip)");
    result_.skipped.push_back({kind, where, detail});
  }

  void accept(std::string key, std::string text) {
    if (is_blank(text)) {
      result_.skipped.push_back({"empty", key, "document has no text"});
      return;
    }
    if (text.size() > options_.max_document_bytes) {
      reject("oversize", key,
             std::to_string(text.size()) + " bytes exceed max_document_bytes " +
                 std::to_string(options_.max_document_bytes));
      return;
    }
    result_.documents.push_back({std::move(key), std::move(text)});
  }

  void parse_jsonl_line(const char* begin, size_t size, uint64_t line) {
    auto where = shard_name_ + ":" + std::to_string(line);
    // RapidJSON takes a NUL byte for the end of the input, so it would
    // accept a record followed by a NUL byte and any bytes at all. JSON
    // allows no unescaped NUL byte anywhere, so the line is malformed.
    if (const void* nul = std::memchr(begin, '\0', size)) {
      reject("malformed_json", where,
             "NUL byte at byte " +
                 std::to_string(static_cast<const char*>(nul) - begin));
      return;
    }
    rapidjson::Document record;
    record.Parse(begin, size);
    if (record.HasParseError()) {
      reject("malformed_json", where,
             std::string(rapidjson::GetParseError_En(record.GetParseError())) +
                 " at byte " + std::to_string(record.GetErrorOffset()));
      return;
    }
    if (!record.IsObject()) {
      reject("malformed_json", where, "record is not a JSON object");
      return;
    }
    auto field = record.FindMember(options_.text_field.c_str());
    if (field == record.MemberEnd() || !field->value.IsString()) {
      reject("missing_field", where,
             "no string field '" + options_.text_field + "'");
      return;
    }
    accept(where, std::string(field->value.GetString(),
                              field->value.GetStringLength()));
  }

  read_result read(const std::string& path) {
    std::error_code ec;
    auto size = fs::file_size(path, ec);
    if (ec) {
      reject("unreadable_file", shard_name_, ec.message());
      return std::move(result_);
    }
    if (options_.format == shard_format::text &&
        size > options_.max_document_bytes) {
      reject("oversize", shard_name_,
             std::to_string(size) + " bytes exceed max_document_bytes " +
                 std::to_string(options_.max_document_bytes));
      return std::move(result_);
    }

    std::ifstream in(path, std::ios::binary);
    std::string content;
    if (in) {
      content.resize(size);
      in.read(content.data(), static_cast<std::streamsize>(size));
    }
    if (!in || static_cast<uint64_t>(in.gcount()) != size) {
      reject("unreadable_file", shard_name_,
             std::string("read failed: ") + std::strerror(errno));
      return std::move(result_);
    }

    if (options_.format == shard_format::text) {
      accept(shard_name_, std::move(content));
      return std::move(result_);
    }

    uint64_t line = 0;
    size_t start = 0;
    while (start < content.size()) {
      size_t end = content.find('\n', start);
      if (end == std::string::npos)
        end = content.size();
      ++line;
      size_t length = end - start;
      if (length > 0 && content[end - 1] == '\r')
        --length;
      // Blank lines separate nothing in JSON Lines; they are not records.
      bool blank = true;
      for (size_t i = start; i < start + length && blank; ++i)
        blank = content[i] == ' ' || content[i] == '\t';
      if (!blank)
        parse_jsonl_line(content.data() + start, length, line);
      start = end + 1;
    }
    return std::move(result_);
  }

 private:
  std::string shard_name_;
  const reader_options& options_;
  read_result result_;
};

}  // namespace

bool is_blank(const std::string& text) {
  for (char c : text)
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' &&
        c != '\f')
      return false;
  return true;
}

read_result read_shard(const std::string& path, const std::string& shard_name,
                       const reader_options& options) {
  shard_reader reader(shard_name, options);
  return reader.read(path);
}

}  // namespace overlord::sources
