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
};

struct raw_document {
  std::string key;  // "<shard name>:<line>" for jsonl, "<shard name>" for text
  std::string text;
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
