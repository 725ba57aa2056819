#include "sources/reader.hpp"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
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
    result_.documents.push_back({std::move(key), std::move(text), line_});
  }

  bool ranged() const {
    return options_.range_begin > 0 || options_.range_end != UINT64_MAX;
  }

  // Names the current line: by line number for a whole shard, by byte
  // offset for a range, whose absolute line number the reader cannot know.
  std::string where_of(uint64_t line) const {
    return ranged() ? shard_name_ + "@" + std::to_string(line_start_)
                    : shard_name_ + ":" + std::to_string(line);
  }

  void parse_jsonl_line(const char* begin, size_t size, uint64_t line) {
    auto where = where_of(line);
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

    if (options_.format == shard_format::text)
      return read_text(path, size);
    read_jsonl(path);
    return std::move(result_);
  }

 private:
  // A text shard is one document of `size` bytes, already checked against
  // max_document_bytes, so the read allocates at most that much.
  read_result read_text(const std::string& path, uint64_t size) {
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
    accept(shard_name_, std::move(content));
    return std::move(result_);
  }

  // Reads a JSON Lines shard in fixed-size chunks. A line longer than
  // jsonl_line_limit is skipped as oversize while it is read, so memory
  // stays bounded by the limit whatever the shard's size.
  void read_jsonl(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      reject("unreadable_file", shard_name_,
             std::string("open failed: ") + std::strerror(errno));
      return;
    }
    const uint64_t line_limit = jsonl_line_limit(options_.max_document_bytes);
    std::vector<char> chunk(64 * 1024);
    std::string line;
    uint64_t line_number = 1;
    bool oversize = false;     // the current line is over the limit
    uint64_t line_bytes = 0;   // length of the current line so far
    // A range starts at the first line that begins at or after
    // range_begin: the line running into it belongs to the range before.
    uint64_t offset = 0;  // file offset of chunk[0]
    if (options_.range_begin > 0) {
      in.seekg(static_cast<std::streamoff>(options_.range_begin - 1));
      char before = 0;
      if (in.get(before) && before != '\n')
        in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
      if (!in || in.peek() == EOF) {
        if (in.bad())
          reject("unreadable_file", shard_name_,
                 std::string("read failed: ") + std::strerror(errno));
        return;  // no line starts in the range
      }
      offset = static_cast<uint64_t>(in.tellg());
    }
    line_start_ = offset;
    bool done = line_start_ >= options_.range_end;
    while (in && !done) {
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      size_t got = static_cast<size_t>(in.gcount());
      size_t start = 0;
      while (start < got) {
        auto* newline = static_cast<const char*>(
            std::memchr(chunk.data() + start, '\n', got - start));
        size_t end = newline ? static_cast<size_t>(newline - chunk.data()) : got;
        size_t length = end - start;
        line_bytes += length;
        if (!oversize && line_bytes > line_limit) {
          oversize = true;
          line.clear();
          line.shrink_to_fit();
        }
        if (!oversize)
          line.append(chunk.data() + start, length);
        if (!newline)
          break;
        line_ = line_number;
        finish_line(line, oversize, line_bytes, line_number, line_limit);
        result_.lines = line_number;
        ++line_number;
        start = end + 1;
        line_start_ = offset + start;
        if (line_start_ >= options_.range_end) {
          done = true;
          break;
        }
      }
      offset += got;
    }
    if (in.bad()) {
      reject("unreadable_file", shard_name_,
             std::string("read failed: ") + std::strerror(errno));
      return;
    }
    if (!done && line_bytes > 0) {
      line_ = line_number;
      finish_line(line, oversize, line_bytes, line_number, line_limit);
      result_.lines = line_number;
    }
  }

  // Parses one complete line, or rejects it when it was over the limit.
  void finish_line(std::string& line, bool& oversize, uint64_t& line_bytes,
                   uint64_t line_number, uint64_t line_limit) {
    const uint64_t bytes = line_bytes;
    line_bytes = 0;
    if (oversize) {
      oversize = false;
      reject("oversize", shard_name_ + ":" + std::to_string(line_number),
             "line of " + std::to_string(bytes) +
                 " bytes exceeds the JSON Lines limit of " +
                 std::to_string(line_limit) +
                 " bytes (6 x max_document_bytes + 64 KiB)");
      return;
    }
    size_t length = line.size();
    if (length > 0 && line[length - 1] == '\r')
      --length;
    // Blank lines separate nothing in JSON Lines; they are not records.
    bool blank = true;
    for (size_t i = 0; i < length && blank; ++i)
      blank = line[i] == ' ' || line[i] == '\t';
    if (!blank)
      parse_jsonl_line(line.data(), length, line_number);
    line.clear();
  }

  std::string shard_name_;
  const reader_options& options_;
  read_result result_;
  uint64_t line_ = 0;        // number of the line being parsed
  uint64_t line_start_ = 0;  // its byte offset in the shard
};

}  // namespace

uint64_t jsonl_line_limit(uint64_t max_document_bytes) {
  return 6 * max_document_bytes + 64 * 1024;
}

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
