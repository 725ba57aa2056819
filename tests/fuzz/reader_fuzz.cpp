// Fuzz target: the shard reader (sources/reader) on arbitrary file
// contents, as JSON Lines and as a text document, under both bad-input
// policies. Properties checked for every input:
// - with on_bad_input skip, every document kept is non-blank, within
//   max_document_bytes and keyed "<shard>:<line>" with increasing lines,
//   and its line has no NUL byte, which JSON allows nowhere unescaped;
// - with on_bad_input fail, the reader throws overlord::error exactly when
//   the skip run skipped something other than an empty document, and
//   otherwise returns the same documents;
// - no other exception escapes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "sources/reader.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using overlord::sources::read_result;
using overlord::sources::reader_options;
using overlord::sources::shard_format;

constexpr const char* shard_name = "fuzz.jsonl";

// Small enough that the fuzzer reaches the oversize path.
constexpr uint64_t max_document_bytes = 256;

bool has_non_empty_skip(const read_result& result) {
  for (const auto& skipped : result.skipped)
    if (skipped.kind != "empty")
      return true;
  return false;
}

uint64_t line_of(const std::string& key) {
  const std::string prefix = std::string(shard_name) + ":";
  FUZZ_REQUIRE(key.rfind(prefix, 0) == 0, "key '" + key + "' lacks the shard");
  return std::stoull(key.substr(prefix.size()));
}

// Returns line `number` (1-based) of `bytes`, without its '\n'.
std::string_view line_at(std::string_view bytes, uint64_t number) {
  std::size_t start = 0;
  for (uint64_t line = 1; line < number && start < bytes.size(); ++line) {
    const std::size_t end = bytes.find('\n', start);
    start = end == std::string_view::npos ? bytes.size() : end + 1;
  }
  const std::size_t end = std::min(bytes.find('\n', start), bytes.size());
  return bytes.substr(start, end - start);
}

void check_documents(const read_result& result, std::string_view bytes) {
  uint64_t previous_line = 0;
  for (const auto& document : result.documents) {
    FUZZ_REQUIRE(!overlord::sources::is_blank(document.text),
                 "kept a blank document at " + document.key);
    FUZZ_REQUIRE(document.text.size() <= max_document_bytes,
                 "kept an oversize document at " + document.key);
    const uint64_t line = line_of(document.key);
    FUZZ_REQUIRE(line > previous_line,
                 "document keys out of line order at " + document.key);
    previous_line = line;
    FUZZ_REQUIRE(line_at(bytes, line).find('\0') == std::string_view::npos,
                 "kept a record whose line has a NUL byte at " + document.key);
  }
}

void fuzz_jsonl(const std::string& path, std::string_view bytes) {
  reader_options options;
  options.format = shard_format::jsonl;
  options.max_document_bytes = max_document_bytes;

  options.fail_on_bad_input = false;
  const read_result skipping =
      overlord::sources::read_shard(path, shard_name, options);
  check_documents(skipping, bytes);

  options.fail_on_bad_input = true;
  bool threw = false;
  read_result failing;
  try {
    failing = overlord::sources::read_shard(path, shard_name, options);
  } catch (const overlord::error& e) {
    threw = true;
    FUZZ_REQUIRE(e.code() == overlord::errc::invalid_input,
                 std::string("unexpected error code: ") + e.what());
  }
  FUZZ_REQUIRE(threw == has_non_empty_skip(skipping),
               threw ? "fail policy threw on input that skip accepted"
                     : "fail policy accepted input that skip skipped");
  if (threw)
    return;
  FUZZ_REQUIRE(failing.documents.size() == skipping.documents.size(),
               "the policies kept different numbers of documents");
  for (std::size_t i = 0; i < failing.documents.size(); ++i) {
    FUZZ_REQUIRE(failing.documents[i].key == skipping.documents[i].key &&
                     failing.documents[i].text == skipping.documents[i].text,
                 "the policies kept different documents");
  }
}

void fuzz_text(const std::string& path, std::string_view bytes) {
  reader_options options;
  options.format = shard_format::text;
  options.max_document_bytes = max_document_bytes;
  const read_result result =
      overlord::sources::read_shard(path, shard_name, options);
  const bool kept = !overlord::sources::is_blank(std::string(bytes)) &&
                    bytes.size() <= max_document_bytes;
  FUZZ_REQUIRE(result.documents.size() == (kept ? 1u : 0u),
               "a text shard must give one document or one skip");
  FUZZ_REQUIRE(result.documents.size() + result.skipped.size() == 1,
               "a text shard must give one document or one skip");
  if (kept)
    FUZZ_REQUIRE(result.documents[0].text == bytes,
                 "the text document differs from the file");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::string path =
      overlord::fuzzing::write_scratch_file(shard_name, bytes);
  fuzz_jsonl(path, bytes);
  fuzz_text(path, bytes);
  return 0;
}
