// Pre-tokenized datasets in Megatron-LM's indexed layout (MMIDIDX): a
// prefix names PREFIX.idx (header, sequence lengths, sequence pointers,
// document indices) and PREFIX.bin (the token ids, one fixed-size integer
// each). The layout follows megatron/core/datasets/indexed_dataset.py in
// Megatron-LM:
//
//   .idx  offset 0   9 bytes  magic "MMIDIDX\0\0"
//         offset 9   uint64   version, 1
//         offset 17  uint8    dtype code (1 uint8, 2 int8, 3 int16, 4 int32,
//                             5 int64, 6 float64, 7 float32, 8 uint16)
//         offset 18  uint64   sequence count S
//         offset 26  uint64   document index count D (documents + 1)
//         offset 34  int32[S] tokens per sequence
//                    int64[S] byte offset of each sequence in .bin
//                    int64[D] document indices: document d is sequences
//                             [indices[d], indices[d+1]); indices[0] is 0
//                             and indices[D-1] is S
//                    int8[S]  sequence modes, only in multimodal datasets
//
// All integers are little-endian. A document is the concatenation of its
// sequences' token ids. Plain library: no threads, no logging.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "sources/reader.hpp"

namespace overlord::sources {

// Megatron-LM's dtype codes for the values in .bin.
enum class token_dtype : uint8_t {
  uint8 = 1,
  int8 = 2,
  int16 = 3,
  int32 = 4,
  int64 = 5,
  float64 = 6,
  float32 = 7,
  uint16 = 8,
};

const char* to_string(token_dtype dtype);

// Bytes per value of `dtype`.
uint64_t dtype_size(token_dtype dtype);

// The dtype Megatron-LM's preprocessing picks for a vocabulary: uint16
// below 65,500 ids, int32 otherwise.
token_dtype dtype_for_vocabulary(uint64_t vocab_size);

// A read-only view of one dataset through memory maps of both files.
// open() checks everything that costs O(1): header, the .idx size against
// the counts in the header, the first and last document index and the end
// of the last sequence against the .bin size. Per-document structure is
// checked when a document is read, so opening a huge dataset stays cheap.
// Immutable after open(), so one instance may be shared between threads.
class indexed_dataset {
 public:
  // Maps PREFIX.idx and PREFIX.bin. Throws overlord::error: not_found when
  // a file is missing, invalid_input naming the file and the problem when
  // the files are not a valid dataset, io_error when mapping fails.
  static std::shared_ptr<const indexed_dataset> open(const std::string& prefix);

  ~indexed_dataset();
  indexed_dataset(const indexed_dataset&) = delete;
  indexed_dataset& operator=(const indexed_dataset&) = delete;

  const std::string& prefix() const { return prefix_; }
  token_dtype dtype() const { return dtype_; }
  uint64_t sequence_count() const { return sequence_count_; }
  uint64_t document_count() const { return document_index_count_ - 1; }
  uint64_t bin_bytes() const { return bin_size_; }

  // The defect of one document. `kind` is empty for a good document.
  struct problem {
    std::string kind;  // "bad_document" or "oversize"
    std::string detail;
  };

  // Appends the token ids of document `index` to `tokens`. A document is
  // bad when its index is past the end, its document indices are inverted
  // or out of range, a sequence has a negative length or lies outside .bin,
  // a value is outside [0, vocab_size), or it has more than max_bytes
  // bytes in .bin. For a bad document it returns the defect and leaves
  // `tokens` as it was.
  problem read_document(uint64_t index, uint64_t vocab_size, uint64_t max_bytes,
                        std::vector<int32_t>& tokens) const;

 private:
  indexed_dataset() = default;

  int32_t sequence_length(uint64_t sequence) const;
  int64_t sequence_pointer(uint64_t sequence) const;
  int64_t document_index(uint64_t entry) const;

  std::string prefix_;
  std::string idx_path_;
  std::string bin_path_;
  token_dtype dtype_ = token_dtype::int32;
  uint64_t sequence_count_ = 0;
  uint64_t document_index_count_ = 0;
  const unsigned char* idx_ = nullptr;
  uint64_t idx_size_ = 0;
  const unsigned char* bin_ = nullptr;
  uint64_t bin_size_ = 0;
};

struct indexed_read_options {
  bool fail_on_bad_input = false;  // throw instead of skipping
  uint64_t max_document_bytes = 64ull << 20;
  uint64_t vocab_size = 50257;  // valid ids are [0, vocab_size)
  int32_t eos_id = 50256;
  // Appends eos_id to every document. When false, a document must already
  // end with eos_id and is bad input otherwise.
  bool append_eos = true;
};

struct token_document {
  std::string key;  // "<dataset name>:<document index>"
  std::vector<int32_t> tokens;
};

struct indexed_read_result {
  std::vector<token_document> documents;
  std::vector<bad_record> skipped;
};

// Reads documents [first, first + count) of `dataset`, clipped to its
// document count, in index order; `name` is the short dataset name used
// in keys. Empty documents are always skipped (kind "empty"). A bad
// document (kind "bad_document", "oversize" or "missing_eos") throws
// overlord::error(invalid_input) when `options.fail_on_bad_input` is set,
// and is skipped otherwise.
indexed_read_result read_indexed_documents(const indexed_dataset& dataset,
                                           const std::string& name,
                                           uint64_t first, uint64_t count,
                                           const indexed_read_options& options);

// Writes a dataset in the layout above, one sequence per document (split
// into several when a document has more than 2^31 - 1 tokens). The files
// are written as PREFIX.bin.tmp and PREFIX.idx.tmp and renamed into place
// by finish(), so an interrupted run leaves no valid-looking pair behind.
class indexed_writer {
 public:
  // Throws overlord::error(invalid_config) for a float dtype and
  // io_error when PREFIX.bin.tmp cannot be created.
  indexed_writer(std::string prefix, token_dtype dtype);
  ~indexed_writer();
  indexed_writer(const indexed_writer&) = delete;
  indexed_writer& operator=(const indexed_writer&) = delete;

  // Appends one document. Throws overlord::error(invalid_input) when an id
  // does not fit the dtype, io_error when writing fails.
  void add_document(const std::vector<int32_t>& tokens);

  // Writes the index and renames both files into place.
  void finish();

  uint64_t documents() const { return document_indices_.size() - 1; }
  uint64_t tokens() const { return tokens_; }

 private:
  std::string prefix_;
  token_dtype dtype_;
  std::FILE* bin_ = nullptr;
  std::vector<int32_t> sequence_lengths_;
  std::vector<int64_t> document_indices_{0};
  uint64_t tokens_ = 0;
  std::vector<unsigned char> buffer_;
  bool finished_ = false;
};

}  // namespace overlord::sources
