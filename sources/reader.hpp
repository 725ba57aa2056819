// Readers for the on-disk formats of text sources. A reader turns one shard
// (a file) into its documents in file order and sorts bad input into
// counted skips or a thrown overlord::error, per the configured policy.
// Plain functions: callers own threads and logging.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace overlord::sources {

enum class shard_format { jsonl, text };

struct reader_options {
  shard_format format = shard_format::text;
  std::string text_field = "text";  // jsonl: field with the document text
  bool fail_on_bad_input = false;   // throw instead of skipping
  uint64_t max_document_bytes = 64ull << 20;
  // jsonl: read only the lines that start at a byte offset in
  // [range_begin, range_end), so a large shard can be read in parts. With
  // a range, records are named "<shard name>@<byte offset>" in messages
  // and keys, and raw_document::line counts from the range's first line.
  uint64_t range_begin = 0;
  uint64_t range_end = UINT64_MAX;
};

struct raw_document {
  std::string key;  // "<shard name>:<line>" for jsonl, "<shard name>" for text
  std::string text;
  uint64_t line = 0;  // jsonl: line number, from 1 at the range's start
};

// One skipped record, for the caller's log.
struct bad_record {
  std::string kind;  // "malformed_json", "missing_field", "unreadable_file",
                     // "oversize", "empty"
  std::string where;  // shard name and line
  std::string detail;
};

struct read_result {
  std::vector<raw_document> documents;
  std::vector<bad_record> skipped;
  uint64_t lines = 0;  // jsonl: lines that start in the range read
};

// Reads the shard at `path`; `shard_name` is the short name used in keys
// and messages. Empty and whitespace-only documents are always skipped
// (kind "empty"). Other bad input throws overlord::error(invalid_input)
// when `options.fail_on_bad_input` is set, and is skipped otherwise.
read_result read_shard(const std::string& path, const std::string& shard_name,
                       const reader_options& options);

// The longest JSON Lines record read into memory. JSON encodes each byte
// of text in at most 6 bytes (\u00XX), and 64 KiB is left for the other
// fields. A longer line is skipped as oversize without being stored.
uint64_t jsonl_line_limit(uint64_t max_document_bytes);

// True when `text` has no characters other than ASCII whitespace.
bool is_blank(const std::string& text);

}  // namespace overlord::sources
