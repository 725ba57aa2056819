#include "sources/indexed_dataset.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>

#include "common/error.hpp"

namespace fs = std::filesystem;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the indexed layout is little-endian; this reader copies "
              "integers without swapping bytes");

namespace overlord::sources {

namespace {

constexpr char magic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t header_bytes = 34;
constexpr uint64_t version_offset = 9;
constexpr uint64_t dtype_offset = 17;
constexpr uint64_t sequence_count_offset = 18;
constexpr uint64_t document_count_offset = 26;

// Counts above this are rejected before any size arithmetic, so
// `count * 8` cannot overflow.
constexpr uint64_t max_count = uint64_t{1} << 56;

template <class T>
T load(const unsigned char* at) {
  T value;
  std::memcpy(&value, at, sizeof(T));
  return value;
}

bool is_known_dtype(uint8_t code) { return code >= 1 && code <= 8; }

bool is_float_dtype(token_dtype dtype) {
  return dtype == token_dtype::float32 || dtype == token_dtype::float64;
}

// Maps a whole file read-only and stores its size. An empty file maps
// nothing and returns nullptr.
const unsigned char* map_file(const std::string& path, uint64_t& size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int code = errno;
    throw error(code == ENOENT ? errc::not_found : errc::io_error,
                path + ": cannot open: " + std::strerror(code) +
                    (code == ENOENT ? "; an indexed dataset needs both "
                                      "PREFIX.idx and PREFIX.bin"
                                    : ""));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    int code = errno;
    ::close(fd);
    throw error(errc::io_error, path + ": stat failed: " + std::strerror(code));
  }
  size = static_cast<uint64_t>(info.st_size);
  if (size == 0) {
    ::close(fd);
    return nullptr;
  }
  void* data = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int code = errno;
  ::close(fd);
  if (data == MAP_FAILED)
    throw error(errc::io_error, path + ": mmap failed: " + std::strerror(code));
  return static_cast<const unsigned char*>(data);
}

[[noreturn]] void corrupt(const std::string& path, const std::string& problem) {
  throw error(errc::invalid_input, path + ": " + problem);
}

// Appends the `count` values at `at` to `tokens` after checking that each
// is an id in [0, vocab_size). Returns the index of the first bad value,
// or `count` when all are good.
template <class T>
uint64_t append_values(const unsigned char* at, uint64_t count,
                       uint64_t vocab_size, std::vector<int32_t>& tokens,
                       int64_t& bad_value) {
  for (uint64_t i = 0; i < count; ++i) {
    auto value = static_cast<int64_t>(load<T>(at + i * sizeof(T)));
    if (value < 0 || static_cast<uint64_t>(value) >= vocab_size) {
      bad_value = value;
      return i;
    }
    tokens.push_back(static_cast<int32_t>(value));
  }
  return count;
}

}  // namespace

const char* to_string(token_dtype dtype) {
  switch (dtype) {
    case token_dtype::uint8:
      return "uint8";
    case token_dtype::int8:
      return "int8";
    case token_dtype::int16:
      return "int16";
    case token_dtype::int32:
      return "int32";
    case token_dtype::int64:
      return "int64";
    case token_dtype::float64:
      return "float64";
    case token_dtype::float32:
      return "float32";
    case token_dtype::uint16:
      return "uint16";
  }
  return "unknown";
}

uint64_t dtype_size(token_dtype dtype) {
  switch (dtype) {
    case token_dtype::uint8:
    case token_dtype::int8:
      return 1;
    case token_dtype::int16:
    case token_dtype::uint16:
      return 2;
    case token_dtype::int32:
    case token_dtype::float32:
      return 4;
    case token_dtype::int64:
    case token_dtype::float64:
      return 8;
  }
  return 0;
}

token_dtype dtype_for_vocabulary(uint64_t vocab_size) {
  return vocab_size < 65500 ? token_dtype::uint16 : token_dtype::int32;
}

// ---- indexed_dataset ----

std::shared_ptr<const indexed_dataset> indexed_dataset::open(
    const std::string& prefix) {
  std::shared_ptr<indexed_dataset> dataset(new indexed_dataset());
  auto& d = *dataset;
  d.prefix_ = prefix;
  d.idx_path_ = prefix + ".idx";
  d.bin_path_ = prefix + ".bin";
  const auto& idx = d.idx_path_;

  d.idx_ = map_file(idx, d.idx_size_);
  if (d.idx_size_ < header_bytes)
    corrupt(idx, "truncated header: " + std::to_string(d.idx_size_) +
                     " bytes, the header alone takes " +
                     std::to_string(header_bytes));
  if (std::memcmp(d.idx_, magic, sizeof(magic)) != 0)
    corrupt(idx, "bad magic: not an MMIDIDX index (expected the bytes "
                 "\"MMIDIDX\\x00\\x00\" at offset 0)");
  auto version = load<uint64_t>(d.idx_ + version_offset);
  if (version != 1)
    corrupt(idx, "unsupported version " + std::to_string(version) +
                     "; only version 1 exists");
  uint8_t code = d.idx_[dtype_offset];
  if (!is_known_dtype(code))
    corrupt(idx, "unknown dtype code " + std::to_string(code) +
                     "; valid codes are 1 to 8");
  d.dtype_ = static_cast<token_dtype>(code);
  if (is_float_dtype(d.dtype_))
    corrupt(idx, std::string("dtype ") + to_string(d.dtype_) + " (code " +
                     std::to_string(code) +
                     ") holds no token ids; write token datasets with an "
                     "integer dtype such as uint16 or int32");

  d.sequence_count_ = load<uint64_t>(d.idx_ + sequence_count_offset);
  d.document_index_count_ = load<uint64_t>(d.idx_ + document_count_offset);
  const uint64_t sequences = d.sequence_count_;
  const uint64_t indices = d.document_index_count_;
  if (sequences > max_count || indices > max_count)
    corrupt(idx, "implausible counts in the header: " +
                     std::to_string(sequences) + " sequences, " +
                     std::to_string(indices) + " document indices");
  if (indices == 0)
    corrupt(idx, "the header lists no document indices; even an empty "
                 "dataset has the index 0");
  if (indices - 1 > std::numeric_limits<uint32_t>::max())
    corrupt(idx, std::to_string(indices - 1) +
                     " documents are more than one source shard can address "
                     "(2^32 - 1); split the dataset into several prefixes");

  const uint64_t expected = header_bytes + sequences * 4 + sequences * 8 +
                            indices * 8;
  if (d.idx_size_ < expected)
    corrupt(idx, "truncated: the header lists " + std::to_string(sequences) +
                     " sequences and " + std::to_string(indices) +
                     " document indices, which take " +
                     std::to_string(expected) + " bytes, but the file has " +
                     std::to_string(d.idx_size_));
  // Multimodal datasets append one int8 mode per sequence, which a token
  // reader does not need.
  if (d.idx_size_ != expected && d.idx_size_ != expected + sequences)
    corrupt(idx, "size " + std::to_string(d.idx_size_) +
                     " bytes does not match the header, which lists " +
                     std::to_string(sequences) + " sequences and " +
                     std::to_string(indices) + " document indices (" +
                     std::to_string(expected) + " bytes, or " +
                     std::to_string(expected + sequences) +
                     " with sequence modes)");

  auto first = d.document_index(0);
  auto last = d.document_index(indices - 1);
  if (first != 0)
    corrupt(idx, "the first document index is " + std::to_string(first) +
                     "; it must be 0");
  if (last < 0 || static_cast<uint64_t>(last) != sequences)
    corrupt(idx, "the last document index is " + std::to_string(last) +
                     "; it must equal the sequence count " +
                     std::to_string(sequences));

  d.bin_ = map_file(d.bin_path_, d.bin_size_);
  if (sequences > 0) {
    // Megatron-LM writes sequences back to back, so the last one ends at
    // the end of .bin; a shorter file lost its tail.
    const uint64_t last_sequence = sequences - 1;
    auto pointer = d.sequence_pointer(last_sequence);
    auto length = d.sequence_length(last_sequence);
    if (pointer >= 0 && length >= 0) {
      const uint64_t end = static_cast<uint64_t>(pointer) +
                           static_cast<uint64_t>(length) * dtype_size(d.dtype_);
      if (end > d.bin_size_)
        corrupt(d.bin_path_,
                "truncated: sequence " + std::to_string(last_sequence) +
                    " ends at byte " + std::to_string(end) +
                    " but the file has " + std::to_string(d.bin_size_) +
                    " bytes");
    }
  }
  return dataset;
}

indexed_dataset::~indexed_dataset() {
  if (idx_ != nullptr)
    ::munmap(const_cast<unsigned char*>(idx_), idx_size_);
  if (bin_ != nullptr)
    ::munmap(const_cast<unsigned char*>(bin_), bin_size_);
}

int32_t indexed_dataset::sequence_length(uint64_t sequence) const {
  return load<int32_t>(idx_ + header_bytes + sequence * 4);
}

int64_t indexed_dataset::sequence_pointer(uint64_t sequence) const {
  return load<int64_t>(idx_ + header_bytes + sequence_count_ * 4 +
                       sequence * 8);
}

int64_t indexed_dataset::document_index(uint64_t entry) const {
  return load<int64_t>(idx_ + header_bytes + sequence_count_ * 12 + entry * 8);
}

indexed_dataset::problem indexed_dataset::read_document(
    uint64_t index, uint64_t vocab_size, uint64_t max_bytes,
    std::vector<int32_t>& tokens) const {
  if (index >= document_count())
    return {"bad_document", "document " + std::to_string(index) +
                                " is past the last document " +
                                std::to_string(document_count())};
  const auto begin = document_index(index);
  const auto end = document_index(index + 1);
  if (begin < 0 || end < begin ||
      static_cast<uint64_t>(end) > sequence_count_)
    return {"bad_document",
            idx_path_ + ": document indices " + std::to_string(begin) + ", " +
                std::to_string(end) + " of document " + std::to_string(index) +
                " are out of order or past the sequence count " +
                std::to_string(sequence_count_) +
                "; document indices must not decrease"};

  // Check every sequence against .bin before reading any token.
  const uint64_t item = dtype_size(dtype_);
  uint64_t total_bytes = 0;
  for (auto sequence = static_cast<uint64_t>(begin);
       sequence < static_cast<uint64_t>(end); ++sequence) {
    auto length = sequence_length(sequence);
    auto pointer = sequence_pointer(sequence);
    if (length < 0)
      return {"bad_document", idx_path_ + ": sequence " +
                                  std::to_string(sequence) +
                                  " has the negative length " +
                                  std::to_string(length)};
    const uint64_t bytes = static_cast<uint64_t>(length) * item;
    if (pointer < 0 || static_cast<uint64_t>(pointer) > bin_size_ ||
        bytes > bin_size_ - static_cast<uint64_t>(pointer))
      return {"bad_document",
              "sequence " + std::to_string(sequence) + " at byte " +
                  std::to_string(pointer) + " with " + std::to_string(bytes) +
                  " bytes lies outside " + bin_path_ + " (" +
                  std::to_string(bin_size_) + " bytes)"};
    total_bytes += bytes;
    if (total_bytes > max_bytes)
      return {"oversize", "more than " + std::to_string(max_bytes) +
                              " bytes of tokens exceed max_document_bytes"};
  }

  const size_t original_size = tokens.size();
  tokens.reserve(original_size + total_bytes / item);
  for (auto sequence = static_cast<uint64_t>(begin);
       sequence < static_cast<uint64_t>(end); ++sequence) {
    const auto count = static_cast<uint64_t>(sequence_length(sequence));
    const unsigned char* at = bin_ + sequence_pointer(sequence);
    int64_t bad_value = 0;
    uint64_t good = count;
    switch (dtype_) {
      case token_dtype::uint8:
        good = append_values<uint8_t>(at, count, vocab_size, tokens, bad_value);
        break;
      case token_dtype::int8:
        good = append_values<int8_t>(at, count, vocab_size, tokens, bad_value);
        break;
      case token_dtype::int16:
        good = append_values<int16_t>(at, count, vocab_size, tokens, bad_value);
        break;
      case token_dtype::uint16:
        good = append_values<uint16_t>(at, count, vocab_size, tokens, bad_value);
        break;
      case token_dtype::int32:
        good = append_values<int32_t>(at, count, vocab_size, tokens, bad_value);
        break;
      case token_dtype::int64:
        good = append_values<int64_t>(at, count, vocab_size, tokens, bad_value);
        break;
      case token_dtype::float32:
      case token_dtype::float64:
        break;  // rejected by open()
    }
    if (good != count) {
      tokens.resize(original_size);
      return {"bad_document", "token " + std::to_string(bad_value) +
                                  " in sequence " + std::to_string(sequence) +
                                  " is outside the vocabulary [0, " +
                                  std::to_string(vocab_size) + ")"};
    }
  }
  return {};
}

// ---- reading a range of documents ----

indexed_read_result read_indexed_documents(const indexed_dataset& dataset,
                                           const std::string& name,
                                           uint64_t first, uint64_t count,
                                           const indexed_read_options& options) {
  indexed_read_result result;
  const uint64_t total = dataset.document_count();
  const uint64_t end = first >= total ? first : first + std::min(count, total - first);

  auto reject = [&](const std::string& kind, const std::string& where,
                    const std::string& detail) {
    if (options.fail_on_bad_input)
      throw error(errc::invalid_input,
                  where + ": " + kind + ": " + detail +
                      " (on_bad_input is fail; fix the data or set "
                      "on_bad_input: skip)");
    result.skipped.push_back({kind, where, detail});
  };

  for (uint64_t index = first; index < end; ++index) {
    auto key = name + ":" + std::to_string(index);
    token_document document;
    auto problem = dataset.read_document(index, options.vocab_size,
                                         options.max_document_bytes,
                                         document.tokens);
    if (!problem.kind.empty()) {
      reject(problem.kind, key, problem.detail);
      continue;
    }
    if (document.tokens.empty()) {
      result.skipped.push_back({"empty", key, "document has no tokens"});
      continue;
    }
    if (options.append_eos) {
      document.tokens.push_back(options.eos_id);
    } else if (document.tokens.back() != options.eos_id) {
      reject("missing_eos", key,
             "document ends with token " +
                 std::to_string(document.tokens.back()) + ", not EOS " +
                 std::to_string(options.eos_id) +
                 "; set append_eos: true for datasets written without EOS");
      continue;
    }
    document.key = std::move(key);
    result.documents.push_back(std::move(document));
  }
  return result;
}

// ---- indexed_writer ----

indexed_writer::indexed_writer(std::string prefix, token_dtype dtype)
    : prefix_(std::move(prefix)), dtype_(dtype) {
  if (is_float_dtype(dtype_))
    throw error(errc::invalid_config,
                std::string("dtype ") + to_string(dtype_) +
                    " cannot hold token ids; use uint16 or int32");
  auto path = prefix_ + ".bin.tmp";
  bin_ = std::fopen(path.c_str(), "wb");
  if (bin_ == nullptr)
    throw error(errc::io_error,
                path + ": cannot create: " + std::strerror(errno));
}

indexed_writer::~indexed_writer() {
  if (bin_ != nullptr)
    std::fclose(bin_);
  if (!finished_) {
    std::error_code ignored;
    fs::remove(prefix_ + ".bin.tmp", ignored);
    fs::remove(prefix_ + ".idx.tmp", ignored);
  }
}

void indexed_writer::add_document(const std::vector<int32_t>& tokens) {
  const uint64_t item = dtype_size(dtype_);
  int64_t high = 0;
  switch (dtype_) {
    case token_dtype::uint8:
      high = std::numeric_limits<uint8_t>::max();
      break;
    case token_dtype::int8:
      high = std::numeric_limits<int8_t>::max();
      break;
    case token_dtype::int16:
      high = std::numeric_limits<int16_t>::max();
      break;
    case token_dtype::uint16:
      high = std::numeric_limits<uint16_t>::max();
      break;
    default:
      high = std::numeric_limits<int32_t>::max();
      break;
  }

  buffer_.resize(tokens.size() * item);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t value = tokens[i];
    if (value < 0 || value > high)
      throw error(errc::invalid_input,
                  "token " + std::to_string(value) + " of document " +
                      std::to_string(documents()) + " does not fit dtype " +
                      to_string(dtype_) + "; choose a wider dtype");
    unsigned char* at = buffer_.data() + i * item;
    switch (dtype_) {
      case token_dtype::uint8:
      case token_dtype::int8: {
        auto narrow = static_cast<uint8_t>(value);
        std::memcpy(at, &narrow, 1);
        break;
      }
      case token_dtype::int16:
      case token_dtype::uint16: {
        auto narrow = static_cast<uint16_t>(value);
        std::memcpy(at, &narrow, 2);
        break;
      }
      case token_dtype::int32: {
        auto narrow = static_cast<int32_t>(value);
        std::memcpy(at, &narrow, 4);
        break;
      }
      default: {
        std::memcpy(at, &value, 8);
        break;
      }
    }
  }
  if (!buffer_.empty() &&
      std::fwrite(buffer_.data(), 1, buffer_.size(), bin_) != buffer_.size())
    throw error(errc::io_error, prefix_ + ".bin.tmp: write failed: " +
                                    std::strerror(errno));

  // A sequence length is an int32, so a longer document takes several.
  constexpr uint64_t max_sequence = std::numeric_limits<int32_t>::max();
  uint64_t left = tokens.size();
  do {
    const uint64_t length = std::min(left, max_sequence);
    sequence_lengths_.push_back(static_cast<int32_t>(length));
    left -= length;
  } while (left > 0);
  document_indices_.push_back(static_cast<int64_t>(sequence_lengths_.size()));
  tokens_ += tokens.size();
}

void indexed_writer::finish() {
  if (std::fclose(bin_) != 0) {
    bin_ = nullptr;
    throw error(errc::io_error, prefix_ + ".bin.tmp: write failed: " +
                                    std::strerror(errno));
  }
  bin_ = nullptr;

  auto idx_tmp = prefix_ + ".idx.tmp";
  std::FILE* idx = std::fopen(idx_tmp.c_str(), "wb");
  if (idx == nullptr)
    throw error(errc::io_error,
                idx_tmp + ": cannot create: " + std::strerror(errno));
  auto put = [&](const void* data, size_t size) {
    if (size > 0 && std::fwrite(data, 1, size, idx) != size) {
      std::fclose(idx);
      throw error(errc::io_error,
                  idx_tmp + ": write failed: " + std::strerror(errno));
    }
  };

  const uint64_t version = 1;
  const auto code = static_cast<uint8_t>(dtype_);
  const uint64_t sequences = sequence_lengths_.size();
  const uint64_t indices = document_indices_.size();
  put(magic, sizeof(magic));
  put(&version, 8);
  put(&code, 1);
  put(&sequences, 8);
  put(&indices, 8);
  put(sequence_lengths_.data(), sequences * 4);
  std::vector<int64_t> pointers;
  pointers.reserve(sequences);
  int64_t pointer = 0;
  for (auto length : sequence_lengths_) {
    pointers.push_back(pointer);
    pointer += static_cast<int64_t>(length) *
               static_cast<int64_t>(dtype_size(dtype_));
  }
  put(pointers.data(), sequences * 8);
  put(document_indices_.data(), indices * 8);
  if (std::fclose(idx) != 0)
    throw error(errc::io_error,
                idx_tmp + ": write failed: " + std::strerror(errno));

  std::error_code ec;
  fs::rename(prefix_ + ".bin.tmp", prefix_ + ".bin", ec);
  if (!ec)
    fs::rename(idx_tmp, prefix_ + ".idx", ec);
  if (ec)
    throw error(errc::io_error,
                prefix_ + ": cannot rename the written files into place: " +
                    ec.message());
  finished_ = true;
}

}  // namespace overlord::sources
