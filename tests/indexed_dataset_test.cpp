#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "sources/indexed_dataset.hpp"
#include "tests/test_files.hpp"

using overlord::errc;
using overlord::error;
using overlord::sources::indexed_dataset;
using overlord::sources::indexed_read_options;
using overlord::sources::indexed_writer;
using overlord::sources::read_indexed_documents;
using overlord::sources::token_dtype;
using overlord::testing::temp_dir;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <class T>
void append(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

template <class T>
T load_at(const std::string& bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// The fields of an index file, written byte for byte as given, so tests
// can build files that no correct writer produces.
struct index_fields {
  std::string magic = std::string("MMIDIDX\0\0", 9);
  uint64_t version = 1;
  uint8_t dtype = 8;  // uint16
  std::vector<int32_t> lengths;
  std::vector<int64_t> pointers;
  std::vector<int64_t> document_indices;

  std::string bytes() const {
    std::string out = magic;
    append(out, version);
    append(out, dtype);
    append(out, static_cast<uint64_t>(lengths.size()));
    append(out, static_cast<uint64_t>(document_indices.size()));
    for (auto length : lengths)
      append(out, length);
    for (auto pointer : pointers)
      append(out, pointer);
    for (auto index : document_indices)
      append(out, index);
    return out;
  }
};

// Three documents of uint16 tokens: [1 2 3], [4 5] and [6], one sequence
// each, the layout Megatron-LM writes.
index_fields three_documents() {
  index_fields fields;
  fields.lengths = {3, 2, 1};
  fields.pointers = {0, 6, 10};
  fields.document_indices = {0, 1, 2, 3};
  return fields;
}

std::string three_documents_bin() {
  std::string out;
  for (uint16_t token : {1, 2, 3, 4, 5, 6})
    append(out, token);
  return out;
}

// Writes PREFIX.idx and PREFIX.bin under `dir` and returns PREFIX.
std::string write_dataset(const temp_dir& dir, const std::string& name,
                          const std::string& idx, const std::string& bin) {
  auto prefix = (dir.path() / name).string();
  write_file(prefix + ".idx", idx);
  write_file(prefix + ".bin", bin);
  return prefix;
}

// Returns the message of the error that opening `prefix` throws.
std::string open_error(const std::string& prefix) {
  try {
    indexed_dataset::open(prefix);
  } catch (const error& e) {
    CHECK(e.code() == errc::invalid_input);
    return e.what();
  }
  FAIL("open(" << prefix << ") succeeded");
  return "";
}

indexed_read_options options_for(uint64_t vocab_size, bool fail) {
  indexed_read_options options;
  options.vocab_size = vocab_size;
  options.eos_id = static_cast<int32_t>(vocab_size - 1);
  options.fail_on_bad_input = fail;
  return options;
}

}  // namespace

TEST_CASE("writer output parses as MMIDIDX", "[indexed]") {
  temp_dir dir("indexed-header");
  auto prefix = (dir.path() / "corpus").string();
  indexed_writer writer(prefix, token_dtype::uint16);
  writer.add_document({10, 11, 12});
  writer.add_document({50256});
  writer.finish();

  auto idx = read_file(prefix + ".idx");
  REQUIRE(idx.size() == 34 + 2 * 4 + 2 * 8 + 3 * 8);
  CHECK(idx.compare(0, 9, std::string("MMIDIDX\0\0", 9)) == 0);
  CHECK(load_at<uint64_t>(idx, 9) == 1);
  CHECK(load_at<uint8_t>(idx, 17) == 8);
  CHECK(load_at<uint64_t>(idx, 18) == 2);
  CHECK(load_at<uint64_t>(idx, 26) == 3);
  CHECK(load_at<int32_t>(idx, 34) == 3);
  CHECK(load_at<int32_t>(idx, 38) == 1);
  CHECK(load_at<int64_t>(idx, 42) == 0);
  CHECK(load_at<int64_t>(idx, 50) == 6);
  CHECK(load_at<int64_t>(idx, 58) == 0);
  CHECK(load_at<int64_t>(idx, 66) == 1);
  CHECK(load_at<int64_t>(idx, 74) == 2);
  CHECK(read_file(prefix + ".bin").size() == 8);
  CHECK_FALSE(std::filesystem::exists(prefix + ".bin.tmp"));
  CHECK_FALSE(std::filesystem::exists(prefix + ".idx.tmp"));

  auto dataset = indexed_dataset::open(prefix);
  CHECK(dataset->dtype() == token_dtype::uint16);
  CHECK(dataset->sequence_count() == 2);
  CHECK(dataset->document_count() == 2);
  CHECK(dataset->bin_bytes() == 8);
}

TEST_CASE("writer and reader round trip", "[indexed]") {
  const std::vector<std::vector<int32_t>> documents = {
      {464, 3290, 318}, {50255}, {0, 1, 2, 3, 4, 5, 6, 7}, {40000, 12}};
  for (auto dtype : {token_dtype::uint16, token_dtype::int32,
                     token_dtype::int64}) {
    DYNAMIC_SECTION("dtype " << overlord::sources::to_string(dtype)) {
      temp_dir dir("indexed-round-trip");
      auto prefix = (dir.path() / "sub" / "docs").string();
      std::filesystem::create_directories(dir.path() / "sub");
      indexed_writer writer(prefix, dtype);
      for (const auto& document : documents)
        writer.add_document(document);
      writer.finish();
      CHECK(writer.documents() == 4);
      CHECK(writer.tokens() == 14);

      auto dataset = indexed_dataset::open(prefix);
      CHECK(dataset->dtype() == dtype);
      REQUIRE(dataset->document_count() == documents.size());
      auto read = read_indexed_documents(*dataset, "docs", 0, 100,
                                         options_for(50257, true));
      REQUIRE(read.documents.size() == documents.size());
      CHECK(read.skipped.empty());
      for (size_t i = 0; i < documents.size(); ++i) {
        auto expected = documents[i];
        expected.push_back(50256);
        CHECK(read.documents[i].key == "docs:" + std::to_string(i));
        CHECK(read.documents[i].tokens == expected);
      }
    }
  }
}

TEST_CASE("reader reads ranges of documents", "[indexed]") {
  temp_dir dir("indexed-ranges");
  auto prefix = (dir.path() / "ranges").string();
  indexed_writer writer(prefix, token_dtype::uint16);
  for (int32_t i = 0; i < 10; ++i)
    writer.add_document({i + 1, i + 2});
  writer.finish();
  auto dataset = indexed_dataset::open(prefix);

  auto middle = read_indexed_documents(*dataset, "ranges", 4, 3,
                                       options_for(100, true));
  REQUIRE(middle.documents.size() == 3);
  CHECK(middle.documents[0].key == "ranges:4");
  CHECK(middle.documents[0].tokens == std::vector<int32_t>{5, 6, 99});
  CHECK(middle.documents[2].key == "ranges:6");

  auto tail = read_indexed_documents(*dataset, "ranges", 8, 1024,
                                     options_for(100, true));
  REQUIRE(tail.documents.size() == 2);
  CHECK(tail.documents[1].key == "ranges:9");

  auto past = read_indexed_documents(*dataset, "ranges", 10, 5,
                                     options_for(100, true));
  CHECK(past.documents.empty());
  CHECK(past.skipped.empty());
}

TEST_CASE("reader concatenates a document's sequences", "[indexed]") {
  temp_dir dir("indexed-sequences");
  index_fields fields;
  fields.lengths = {2, 1, 3};
  fields.pointers = {0, 4, 6};
  fields.document_indices = {0, 2, 3};  // document 0 has two sequences
  std::string bin;
  for (uint16_t token : {7, 8, 9, 10, 11, 12})
    append(bin, token);
  auto prefix = write_dataset(dir, "multi", fields.bytes(), bin);

  auto dataset = indexed_dataset::open(prefix);
  REQUIRE(dataset->document_count() == 2);
  auto read = read_indexed_documents(*dataset, "multi", 0, 2,
                                     options_for(100, true));
  REQUIRE(read.documents.size() == 2);
  CHECK(read.documents[0].tokens == std::vector<int32_t>{7, 8, 9, 99});
  CHECK(read.documents[1].tokens == std::vector<int32_t>{10, 11, 12, 99});
}

TEST_CASE("reader accepts multimodal sequence modes", "[indexed]") {
  temp_dir dir("indexed-modes");
  auto idx = three_documents().bytes();
  idx += std::string(3, '\0');  // one int8 mode per sequence
  auto prefix = write_dataset(dir, "modes", idx, three_documents_bin());
  auto dataset = indexed_dataset::open(prefix);
  CHECK(dataset->document_count() == 3);
}

TEST_CASE("append_eos false requires EOS at the end", "[indexed]") {
  temp_dir dir("indexed-eos");
  auto prefix = (dir.path() / "eos").string();
  indexed_writer writer(prefix, token_dtype::uint16);
  writer.add_document({5, 99});
  writer.add_document({6, 7});
  writer.finish();
  auto dataset = indexed_dataset::open(prefix);

  auto options = options_for(100, false);
  options.append_eos = false;
  auto read = read_indexed_documents(*dataset, "eos", 0, 2, options);
  REQUIRE(read.documents.size() == 1);
  CHECK(read.documents[0].tokens == std::vector<int32_t>{5, 99});
  REQUIRE(read.skipped.size() == 1);
  CHECK(read.skipped[0].kind == "missing_eos");
  CHECK(read.skipped[0].where == "eos:1");

  options.fail_on_bad_input = true;
  CHECK_THROWS_WITH(read_indexed_documents(*dataset, "eos", 0, 2, options),
                    Catch::Contains("eos:1: missing_eos") &&
                        Catch::Contains("set append_eos: true"));
}

TEST_CASE("reader skips empty documents", "[indexed]") {
  temp_dir dir("indexed-empty");
  auto prefix = (dir.path() / "empty").string();
  indexed_writer writer(prefix, token_dtype::uint16);
  writer.add_document({});
  writer.add_document({3});
  writer.finish();
  auto dataset = indexed_dataset::open(prefix);
  auto read = read_indexed_documents(*dataset, "empty", 0, 2,
                                     options_for(100, true));
  REQUIRE(read.documents.size() == 1);
  CHECK(read.documents[0].key == "empty:1");
  REQUIRE(read.skipped.size() == 1);
  CHECK(read.skipped[0].kind == "empty");
}

TEST_CASE("corrupt index headers are rejected", "[indexed]") {
  temp_dir dir("indexed-corrupt-header");
  const auto bin = three_documents_bin();

  SECTION("bad magic") {
    auto fields = three_documents();
    fields.magic = std::string("MMIDIDY\0\0", 9);
    auto prefix = write_dataset(dir, "magic", fields.bytes(), bin);
    auto message = open_error(prefix);
    CHECK_THAT(message, Catch::StartsWith(prefix + ".idx: bad magic"));
  }
  SECTION("bad version") {
    auto fields = three_documents();
    fields.version = 2;
    auto prefix = write_dataset(dir, "version", fields.bytes(), bin);
    CHECK_THAT(open_error(prefix),
               Catch::Contains(".idx: unsupported version 2"));
  }
  SECTION("unknown dtype code") {
    for (uint8_t code : {0, 9, 255}) {
      auto fields = three_documents();
      fields.dtype = code;
      auto prefix = write_dataset(dir, "dtype", fields.bytes(), bin);
      CHECK_THAT(open_error(prefix),
                 Catch::Contains("unknown dtype code " + std::to_string(code)));
    }
  }
  SECTION("float dtype") {
    auto fields = three_documents();
    fields.dtype = 7;
    auto prefix = write_dataset(dir, "float", fields.bytes(), bin);
    CHECK_THAT(open_error(prefix),
               Catch::Contains("dtype float32 (code 7) holds no token ids"));
  }
  SECTION("truncated header") {
    auto prefix = write_dataset(dir, "short",
                                three_documents().bytes().substr(0, 20), bin);
    CHECK_THAT(open_error(prefix),
               Catch::Contains(".idx: truncated header: 20 bytes"));
  }
  SECTION("truncated index") {
    auto idx = three_documents().bytes();
    auto prefix = write_dataset(dir, "cut", idx.substr(0, idx.size() - 5), bin);
    CHECK_THAT(open_error(prefix),
               Catch::Contains(".idx: truncated: the header lists 3 sequences "
                               "and 4 document indices, which take 102 bytes, "
                               "but the file has 97"));
  }
  SECTION("index longer than the header says") {
    auto idx = three_documents().bytes() + std::string(5, '\0');
    auto prefix = write_dataset(dir, "long", idx, bin);
    CHECK_THAT(open_error(prefix),
               Catch::Contains("size 107 bytes does not match the header"));
  }
  SECTION("first document index is not 0") {
    auto fields = three_documents();
    fields.document_indices = {1, 1, 2, 3};
    auto prefix = write_dataset(dir, "first", fields.bytes(), bin);
    CHECK_THAT(open_error(prefix),
               Catch::Contains("the first document index is 1; it must be 0"));
  }
  SECTION("last document index is not the sequence count") {
    auto fields = three_documents();
    fields.document_indices = {0, 1, 2, 2};
    auto prefix = write_dataset(dir, "last", fields.bytes(), bin);
    CHECK_THAT(open_error(prefix),
               Catch::Contains("the last document index is 2; it must equal "
                               "the sequence count 3"));
  }
  SECTION("truncated data file") {
    auto prefix = write_dataset(dir, "data", three_documents().bytes(),
                                bin.substr(0, bin.size() - 1));
    CHECK_THAT(open_error(prefix),
               Catch::Contains(prefix + ".bin: truncated: sequence 2 ends at "
                                        "byte 12 but the file has 11 bytes"));
  }
  SECTION("missing data file") {
    auto prefix = (dir.path() / "alone").string();
    write_file(prefix + ".idx", three_documents().bytes());
    try {
      indexed_dataset::open(prefix);
      FAIL("open succeeded without a .bin");
    } catch (const error& e) {
      CHECK(e.code() == errc::not_found);
      CHECK_THAT(std::string(e.what()),
                 Catch::Contains(prefix + ".bin: cannot open"));
    }
  }
}

TEST_CASE("corrupt documents are skipped or fail", "[indexed]") {
  temp_dir dir("indexed-corrupt-documents");
  const auto bin = three_documents_bin();

  struct corruption {
    std::string name;
    index_fields fields;
    std::string kind;
    std::string detail;
  };
  std::vector<corruption> cases;
  {
    auto fields = three_documents();
    fields.pointers[1] = 1 << 20;
    cases.push_back({"pointer past the end", fields, "bad_document",
                     "sequence 1 at byte 1048576 with 4 bytes lies outside"});
  }
  {
    auto fields = three_documents();
    fields.pointers[1] = 10;  // 10 + 4 bytes > 12
    cases.push_back({"sequence crossing the end", fields, "bad_document",
                     "sequence 1 at byte 10 with 4 bytes lies outside"});
  }
  {
    auto fields = three_documents();
    fields.pointers[1] = -8;
    cases.push_back({"negative pointer", fields, "bad_document",
                     "sequence 1 at byte -8"});
  }
  {
    auto fields = three_documents();
    fields.lengths[1] = -2;
    cases.push_back({"negative length", fields, "bad_document",
                     "sequence 1 has the negative length -2"});
  }
  {
    auto fields = three_documents();
    fields.document_indices = {0, 2, 1, 3};
    cases.push_back({"document indices out of order", fields, "bad_document",
                     "document indices 2, 1 of document 1 are out of order"});
  }

  for (const auto& item : cases) {
    DYNAMIC_SECTION(item.name) {
      auto prefix = write_dataset(dir, "bad", item.fields.bytes(), bin);
      auto dataset = indexed_dataset::open(prefix);

      auto read = read_indexed_documents(*dataset, "bad", 0, 3,
                                         options_for(100, false));
      REQUIRE(read.skipped.size() == 1);
      CHECK(read.skipped[0].kind == item.kind);
      CHECK(read.skipped[0].where == "bad:1");
      CHECK_THAT(read.skipped[0].detail, Catch::Contains(item.detail));
      CHECK(read.documents.size() == 2);

      CHECK_THROWS_WITH(read_indexed_documents(*dataset, "bad", 0, 3,
                                               options_for(100, true)),
                        Catch::Contains("bad:1: " + item.kind) &&
                            Catch::Contains(item.detail) &&
                            Catch::Contains("on_bad_input is fail"));
    }
  }
}

TEST_CASE("tokens outside the vocabulary are bad input", "[indexed]") {
  temp_dir dir("indexed-vocabulary");
  auto prefix = write_dataset(dir, "vocab", three_documents().bytes(),
                              three_documents_bin());
  auto dataset = indexed_dataset::open(prefix);

  // A vocabulary of 5 ids makes token 5 of document 1 and token 6 of
  // document 2 invalid.
  auto read = read_indexed_documents(*dataset, "vocab", 0, 3,
                                     options_for(5, false));
  REQUIRE(read.documents.size() == 1);
  REQUIRE(read.skipped.size() == 2);
  CHECK(read.skipped[0].where == "vocab:1");
  CHECK_THAT(read.skipped[0].detail,
             Catch::Contains("token 5 in sequence 1 is outside the "
                             "vocabulary [0, 5)"));
  CHECK(read.skipped[1].where == "vocab:2");

  CHECK_THROWS_AS(read_indexed_documents(*dataset, "vocab", 0, 3,
                                         options_for(5, true)),
                  error);
}

TEST_CASE("negative token ids are bad input", "[indexed]") {
  temp_dir dir("indexed-negative");
  index_fields fields;
  fields.dtype = 4;  // int32
  fields.lengths = {2};
  fields.pointers = {0};
  fields.document_indices = {0, 1};
  std::string bin;
  append(bin, int32_t{3});
  append(bin, int32_t{-1});
  auto prefix = write_dataset(dir, "negative", fields.bytes(), bin);
  auto dataset = indexed_dataset::open(prefix);
  auto read = read_indexed_documents(*dataset, "negative", 0, 1,
                                     options_for(100, false));
  CHECK(read.documents.empty());
  REQUIRE(read.skipped.size() == 1);
  CHECK_THAT(read.skipped[0].detail, Catch::Contains("token -1"));
}

TEST_CASE("oversize documents are bad input", "[indexed]") {
  temp_dir dir("indexed-oversize");
  auto prefix = write_dataset(dir, "big", three_documents().bytes(),
                              three_documents_bin());
  auto dataset = indexed_dataset::open(prefix);
  auto options = options_for(100, false);
  options.max_document_bytes = 4;  // document 0 has 6 bytes of tokens
  auto read = read_indexed_documents(*dataset, "big", 0, 3, options);
  CHECK(read.documents.size() == 2);
  REQUIRE(read.skipped.size() == 1);
  CHECK(read.skipped[0].kind == "oversize");
  CHECK(read.skipped[0].where == "big:0");
}

TEST_CASE("writer rejects ids that do not fit", "[indexed]") {
  temp_dir dir("indexed-narrow");
  auto prefix = (dir.path() / "narrow").string();
  {
    indexed_writer writer(prefix, token_dtype::uint16);
    CHECK_THROWS_WITH(writer.add_document({70000}),
                      Catch::Contains("token 70000 of document 0 does not fit "
                                      "dtype uint16"));
  }
  // An unfinished writer leaves no files behind.
  CHECK_FALSE(std::filesystem::exists(prefix + ".bin.tmp"));
  CHECK_FALSE(std::filesystem::exists(prefix + ".bin"));
  CHECK_FALSE(std::filesystem::exists(prefix + ".idx"));
}

TEST_CASE("dtype follows the vocabulary size", "[indexed]") {
  CHECK(overlord::sources::dtype_for_vocabulary(50257) == token_dtype::uint16);
  CHECK(overlord::sources::dtype_for_vocabulary(65499) == token_dtype::uint16);
  CHECK(overlord::sources::dtype_for_vocabulary(65500) == token_dtype::int32);
  CHECK(overlord::sources::dtype_for_vocabulary(128256) == token_dtype::int32);
}
