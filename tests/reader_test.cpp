#include <catch2/catch.hpp>
#include <unistd.h>

#include "common/error.hpp"
#include "sources/reader.hpp"
#include "tests/test_files.hpp"

using overlord::error;
using overlord::sources::read_shard;
using overlord::sources::reader_options;
using overlord::sources::shard_format;
using overlord::testing::temp_dir;

namespace {

reader_options jsonl_options() {
  reader_options options;
  options.format = shard_format::jsonl;
  options.text_field = "text";
  return options;
}

}  // namespace

TEST_CASE("jsonl reader keeps file order", "[reader]") {
  temp_dir dir("reader-order");
  auto path = dir.write("a.jsonl",
                        "{\"text\": \"first\"}\n"
                        "{\"text\": \"second\", \"id\": 2}\r\n"
                        "\n"
                        "{\"text\": \"third\"}");
  auto result = read_shard(path, "a.jsonl", jsonl_options());
  REQUIRE(result.documents.size() == 3);
  CHECK(result.documents[0].key == "a.jsonl:1");
  CHECK(result.documents[0].text == "first");
  CHECK(result.documents[1].key == "a.jsonl:2");
  CHECK(result.documents[1].text == "second");
  CHECK(result.documents[2].key == "a.jsonl:4");
  CHECK(result.skipped.empty());
}

TEST_CASE("jsonl reader skips malformed lines", "[reader]") {
  temp_dir dir("reader-malformed");
  auto path = dir.write("b.jsonl",
                        "{\"text\": \"ok\"}\n"
                        "{\"text\": \"unterminated\n"
                        "[1, 2]\n"
                        "{\"body\": \"no text field\"}\n"
                        "{\"text\": 42}\n"
                        "{\"text\": \"   \\n\\t \"}\n"
                        "{\"text\": \"last\"}\n");
  auto result = read_shard(path, "b.jsonl", jsonl_options());
  REQUIRE(result.documents.size() == 2);
  CHECK(result.documents[0].key == "b.jsonl:1");
  CHECK(result.documents[1].key == "b.jsonl:7");
  REQUIRE(result.skipped.size() == 5);
  CHECK(result.skipped[0].kind == "malformed_json");
  CHECK(result.skipped[0].where == "b.jsonl:2");
  CHECK(result.skipped[1].kind == "malformed_json");
  CHECK(result.skipped[1].where == "b.jsonl:3");
  CHECK(result.skipped[2].kind == "missing_field");
  CHECK(result.skipped[2].where == "b.jsonl:4");
  CHECK(result.skipped[3].kind == "missing_field");
  CHECK(result.skipped[4].kind == "empty");
  CHECK(result.skipped[4].where == "b.jsonl:6");
}

TEST_CASE("jsonl reader truncated last line", "[reader]") {
  temp_dir dir("reader-truncated");
  auto path = dir.write("c.jsonl", "{\"text\": \"whole\"}\n{\"text\": \"cut o");
  auto result = read_shard(path, "c.jsonl", jsonl_options());
  REQUIRE(result.documents.size() == 1);
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "malformed_json");
  CHECK(result.skipped[0].where == "c.jsonl:2");
}

TEST_CASE("jsonl reader keeps invalid UTF-8 bytes", "[reader]") {
  temp_dir dir("reader-utf8");
  auto path = dir.write("d.jsonl", "{\"text\": \"caf\xe9 \xff\"}\n");
  auto result = read_shard(path, "d.jsonl", jsonl_options());
  REQUIRE(result.documents.size() == 1);
  // The tokenizer replaces invalid sequences; the reader passes bytes on.
  CHECK(result.documents[0].text == "caf\xe9 \xff");
}

TEST_CASE("reader fail policy throws with place", "[reader]") {
  temp_dir dir("reader-fail");
  auto path = dir.write("e.jsonl", "{\"text\": \"ok\"}\nnot json\n");
  auto options = jsonl_options();
  options.fail_on_bad_input = true;
  try {
    read_shard(path, "e.jsonl", options);
    FAIL("no error");
  } catch (const error& e) {
    CHECK(e.code() == overlord::errc::invalid_input);
    CHECK_THAT(e.what(), Catch::Contains("e.jsonl:2"));
    CHECK_THAT(e.what(), Catch::Contains("malformed_json"));
  }
}

TEST_CASE("reader fail policy still drops empty", "[reader]") {
  temp_dir dir("reader-fail-empty");
  auto path = dir.write("f.jsonl", "{\"text\": \"\"}\n{\"text\": \"x\"}\n");
  auto options = jsonl_options();
  options.fail_on_bad_input = true;
  auto result = read_shard(path, "f.jsonl", options);
  CHECK(result.documents.size() == 1);
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "empty");
}

TEST_CASE("text reader returns whole file", "[reader]") {
  temp_dir dir("reader-text");
  auto path = dir.write("book.txt", "Call me Ishmael.\n\nSome years ago");
  reader_options options;
  auto result = read_shard(path, "book.txt", options);
  REQUIRE(result.documents.size() == 1);
  CHECK(result.documents[0].key == "book.txt");
  CHECK(result.documents[0].text == "Call me Ishmael.\n\nSome years ago");
}

TEST_CASE("text reader drops blank file", "[reader]") {
  temp_dir dir("reader-blank");
  auto path = dir.write("blank.txt", " \n\t\r\n");
  auto result = read_shard(path, "blank.txt", reader_options());
  CHECK(result.documents.empty());
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "empty");
}

TEST_CASE("text reader rejects oversize file unread", "[reader]") {
  temp_dir dir("reader-oversize");
  auto path = dir.write("big.txt", std::string(100, 'x'));
  reader_options options;
  options.max_document_bytes = 99;
  auto result = read_shard(path, "big.txt", options);
  CHECK(result.documents.empty());
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "oversize");
}

TEST_CASE("reader reports missing file", "[reader]") {
  temp_dir dir("reader-missing");
  auto result = read_shard((dir.path() / "gone.txt").string(), "gone.txt",
                           reader_options());
  CHECK(result.documents.empty());
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "unreadable_file");
  CHECK(result.skipped[0].where == "gone.txt");
}

TEST_CASE("reader reports directory as unreadable", "[reader]") {
  temp_dir dir("reader-directory");
  std::filesystem::create_directories(dir.path() / "folder.txt");
  auto result = read_shard((dir.path() / "folder.txt").string(), "folder.txt",
                           reader_options());
  CHECK(result.documents.empty());
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "unreadable_file");
}

TEST_CASE("jsonl reader rejects NUL after record", "[reader]") {
  // RapidJSON alone stops at the NUL byte and accepts the record before it.
  temp_dir dir("reader-nul");
  const std::string content =
      std::string("{\"text\": \"kept\"}\n{\"text\": \"cut\"}") +
      std::string(1, '\0') + "{\"broken\n{\"text\": \"escaped \\u0000 ok\"}\n";
  auto path = dir.write("n.jsonl", content);
  auto result = read_shard(path, "n.jsonl", jsonl_options());
  REQUIRE(result.documents.size() == 2);
  CHECK(result.documents[0].key == "n.jsonl:1");
  CHECK(result.documents[1].key == "n.jsonl:3");
  CHECK(result.documents[1].text == std::string("escaped ") + '\0' + " ok");
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "malformed_json");
  CHECK(result.skipped[0].where == "n.jsonl:2");
  CHECK(result.skipped[0].detail == "NUL byte at byte 15");
}

TEST_CASE("jsonl byte ranges cover every line once", "[reader]") {
  temp_dir dir("reader-ranges");
  // Lines of many lengths, blank lines, a malformed line, a CRLF line and
  // a last line without a newline.
  std::string content;
  for (int i = 0; i < 120; ++i) {
    if (i % 17 == 5)
      content += "\n";
    else if (i == 33)
      content += "{\"text\": broken\n";
    else if (i == 71)
      content += "{\"text\": \"crlf " + std::to_string(i) + "\"}\r\n";
    else
      content += "{\"text\": \"" + std::string(1 + (i * 37) % 90, 'a' + i % 26) +
                 "\"}\n";
  }
  content += "{\"text\": \"last\"}";
  auto path = dir.write("big.jsonl", content);
  auto whole = read_shard(path, "big.jsonl", jsonl_options());
  REQUIRE(whole.documents.size() > 100);

  for (uint64_t range : {7ull, 64ull, 333ull, 4096ull, 1ull << 20}) {
    auto options = jsonl_options();
    std::vector<std::string> keys;
    std::vector<std::string> texts;
    size_t skipped = 0;
    uint64_t lines = 0;
    for (uint64_t begin = 0; begin < content.size(); begin += range) {
      options.range_begin = begin;
      options.range_end = begin + range;
      auto part = read_shard(path, "big.jsonl", options);
      for (const auto& doc : part.documents) {
        // The caller numbers lines across ranges, as the pool does.
        keys.push_back("big.jsonl:" + std::to_string(lines + doc.line));
        texts.push_back(doc.text);
        CHECK(doc.key.rfind("big.jsonl@", 0) == 0);
      }
      skipped += part.skipped.size();
      lines += part.lines;
    }
    INFO("range " << range);
    REQUIRE(keys.size() == whole.documents.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      CHECK(keys[i] == whole.documents[i].key);
      CHECK(texts[i] == whole.documents[i].text);
    }
    CHECK(skipped == whole.skipped.size());
  }
}
