// Fuzz target: the Megatron indexed-dataset reader
// (sources/indexed_dataset) on arbitrary .idx and .bin files. The input
// is a 4-byte little-endian length N, then N bytes of PREFIX.idx, then
// PREFIX.bin; N is clipped to what follows. Properties checked for every
// input:
// - indexed_dataset::open returns a dataset or throws
//   overlord::error(invalid_input);
// - with on_bad_input skip, every document kept has ids in
//   [0, vocab_size), ends with the EOS id, fits max_document_bytes, and
//   is keyed "<name>:<index>" in increasing index order;
// - with fail, the reader throws overlord::error(invalid_input) exactly
//   when skip skipped something other than an empty document, and
//   otherwise returns the same documents;
// - no other exception escapes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "sources/indexed_dataset.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using overlord::sources::indexed_dataset;
using overlord::sources::indexed_read_options;
using overlord::sources::indexed_read_result;

constexpr uint64_t vocab_size = 50257;
constexpr int32_t eos_id = 50256;
// Small enough that the fuzzer reaches the oversize path.
constexpr uint64_t max_document_bytes = 4096;
// Documents read per input, so that a header claiming billions of empty
// documents does not stall the fuzzer.
constexpr uint64_t max_documents = 4096;

indexed_read_options options_with(bool fail) {
  indexed_read_options options;
  options.fail_on_bad_input = fail;
  options.max_document_bytes = max_document_bytes;
  options.vocab_size = vocab_size;
  options.eos_id = eos_id;
  return options;
}

bool has_non_empty_skip(const indexed_read_result& result) {
  for (const auto& skipped : result.skipped)
    if (skipped.kind != "empty")
      return true;
  return false;
}

void check_documents(const indexed_read_result& result) {
  uint64_t next_index = 0;
  for (const auto& document : result.documents) {
    FUZZ_REQUIRE(document.key.rfind("fuzz:", 0) == 0,
                 "key '" + document.key + "' lacks the dataset name");
    const uint64_t index = std::stoull(document.key.substr(5));
    FUZZ_REQUIRE(index >= next_index, "documents out of index order");
    next_index = index + 1;
    FUZZ_REQUIRE(!document.tokens.empty() && document.tokens.back() == eos_id,
                 "document " + document.key + " does not end with EOS");
    for (int32_t id : document.tokens)
      FUZZ_REQUIRE(id >= 0 && static_cast<uint64_t>(id) < vocab_size,
                   "id " + std::to_string(id) + " outside the vocabulary");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4)
    return 0;
  uint64_t idx_size = uint64_t{data[0]} | uint64_t{data[1]} << 8 |
                      uint64_t{data[2]} << 16 | uint64_t{data[3]} << 24;
  idx_size = std::min<uint64_t>(idx_size, size - 4);
  const std::string_view rest(reinterpret_cast<const char*>(data) + 4,
                              size - 4);
  const std::string idx_path =
      overlord::fuzzing::write_scratch_file("fuzz.idx", rest.substr(0, idx_size));
  overlord::fuzzing::write_scratch_file("fuzz.bin", rest.substr(idx_size));
  const std::string prefix = idx_path.substr(0, idx_path.size() - 4);

  std::shared_ptr<const indexed_dataset> dataset;
  try {
    dataset = indexed_dataset::open(prefix);
  } catch (const overlord::error& e) {
    FUZZ_REQUIRE(e.code() == overlord::errc::invalid_input,
                 std::string("unexpected error code: ") + e.what());
    return 0;
  }

  const uint64_t count = std::min(dataset->document_count(), max_documents);
  const indexed_read_result skipping = overlord::sources::read_indexed_documents(
      *dataset, "fuzz", 0, count, options_with(false));
  check_documents(skipping);

  bool threw = false;
  indexed_read_result failing;
  try {
    failing = overlord::sources::read_indexed_documents(*dataset, "fuzz", 0,
                                                        count, options_with(true));
  } catch (const overlord::error& e) {
    threw = true;
    FUZZ_REQUIRE(e.code() == overlord::errc::invalid_input,
                 std::string("unexpected error code: ") + e.what());
  }
  FUZZ_REQUIRE(threw == has_non_empty_skip(skipping),
               threw ? "fail threw on documents skip accepted"
                     : "fail accepted documents skip skipped");
  if (!threw) {
    FUZZ_REQUIRE(failing.documents.size() == skipping.documents.size(),
                 "the policies kept different numbers of documents");
    for (std::size_t i = 0; i < failing.documents.size(); ++i)
      FUZZ_REQUIRE(failing.documents[i].key == skipping.documents[i].key &&
                       failing.documents[i].tokens == skipping.documents[i].tokens,
                   "the policies kept different documents");
  }
  return 0;
}
