// gpt2_tokenizer against ids that js-tiktoken produced for the committed
// fixtures (tests/fixtures/tokenizer/generate.mjs), plus decoding, the
// piece cache, concurrent use and load errors. Needs the GPT-2 vocabulary:
// see gpt2_vocab_directory in tokenizer_test_support.hpp.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/error.hpp"
#include "sources/tokenizer.hpp"
#include "tests/tokenizer_test_support.hpp"

namespace {

using overlord::errc;
using overlord::sources::decode_utf8_lossy;
using overlord::sources::encode_utf8;
using overlord::sources::gpt2_piece_cache;
using overlord::sources::gpt2_tokenizer;
using overlord::sources::strip_utf8_bom;
using overlord::sources::testing::fixture_path;
using overlord::sources::testing::gpt2_vocab_directory;
using overlord::sources::testing::read_bytes;

using ids = std::vector<int32_t>;

std::shared_ptr<const gpt2_tokenizer> shared_tokenizer() {
  static const auto tokenizer = gpt2_tokenizer::load(gpt2_vocab_directory());
  return tokenizer;
}

ids parse_ids(const std::string& line) {
  ids parsed;
  std::istringstream stream(line);
  int32_t id = 0;
  while (stream >> id)
    parsed.push_back(id);
  return parsed;
}

struct fixture {
  std::string name;
  // The document as tools/reference/tokenize.mjs reads it: file bytes
  // without a leading byte order mark, which TextDecoder drops.
  std::string text;
  ids expected;
};

std::vector<fixture> load_fixtures() {
  std::vector<fixture> fixtures;
  for (const auto& entry :
       std::filesystem::directory_iterator(fixture_path("inputs"))) {
    const std::string name = entry.path().stem().string();
    const std::string bytes = read_bytes(entry.path());
    const std::string expected =
        read_bytes(fixture_path("expected/" + name + ".ids"));
    fixtures.push_back(
        {name, std::string(strip_utf8_bom(bytes)), parse_ids(expected)});
  }
  std::sort(fixtures.begin(), fixtures.end(),
            [](const fixture& a, const fixture& b) { return a.name < b.name; });
  REQUIRE(fixtures.size() >= 16);
  return fixtures;
}

// Returns "" if the ids are equal, else where they first differ. Fixture
// documents have thousands of ids, so printing whole vectors would bury the
// difference.
std::string describe_difference(const ids& found, const ids& expected) {
  if (found == expected)
    return "";
  std::size_t index = 0;
  while (index < found.size() && index < expected.size() &&
         found[index] == expected[index])
    ++index;
  const auto at = [index](const ids& values) {
    return index < values.size() ? std::to_string(values[index])
                                 : std::string("(end)");
  };
  return "ids differ at index " + std::to_string(index) + ": found " +
         at(found) + ", expected " + at(expected) + " (" +
         std::to_string(found.size()) + " ids found, " +
         std::to_string(expected.size()) + " expected)";
}

// Returns a fresh directory under Bazel's TEST_TMPDIR (or the system's).
std::filesystem::path make_temporary_directory(const std::string& name) {
  const char* test_tmpdir = std::getenv("TEST_TMPDIR");
  const std::filesystem::path base =
      test_tmpdir ? std::filesystem::path(test_tmpdir)
                  : std::filesystem::temp_directory_path();
  const auto directory = base / ("tokenizer_test_" + name);
  std::filesystem::remove_all(directory);
  std::filesystem::create_directories(directory);
  return directory;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream stream(path, std::ios::binary);
  stream << text;
  REQUIRE(stream.good());
}

// Loads `directory` and returns the overlord::error it throws.
overlord::error load_error(const std::filesystem::path& directory) {
  try {
    gpt2_tokenizer::load(directory.string());
  } catch (const overlord::error& failure) {
    return failure;
  }
  FAIL("gpt2_tokenizer::load(" << directory << ") did not throw");
  throw;  // unreachable: FAIL throws
}

}  // namespace

TEST_CASE("tokenizer loads GPT-2 vocabulary", "[tokenizer]") {
  const auto tokenizer = shared_tokenizer();
  CHECK(tokenizer->vocab_size() == 50257);
  CHECK(tokenizer->eos_id() == 50256);
  CHECK(tokenizer->token_bytes(0) == "!");
  CHECK(tokenizer->token_bytes(50256) == "<|endoftext|>");
}

TEST_CASE("tokenizer encodes like js-tiktoken", "[tokenizer]") {
  const auto tokenizer = shared_tokenizer();
  for (const auto& test : load_fixtures()) {
    INFO("fixture inputs/" << test.name << ".txt");
    CHECK(describe_difference(tokenizer->encode(test.text), test.expected) ==
          "");
  }
}

TEST_CASE("tokenizer with cache matches without", "[tokenizer]") {
  const auto tokenizer = shared_tokenizer();
  gpt2_piece_cache cache(64);
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& test : load_fixtures()) {
      INFO("pass " << pass << ", fixture inputs/" << test.name << ".txt");
      CHECK(describe_difference(tokenizer->encode(test.text, cache),
                                test.expected) == "");
    }
  }
  CHECK(cache.hits() > 0);
  CHECK(cache.misses() > 0);
}

TEST_CASE("tokenizer known ids", "[tokenizer]") {
  const auto tokenizer = shared_tokenizer();
  CHECK(tokenizer->encode("Hello world") == ids{15496, 995});
  CHECK(tokenizer->encode("").empty());
  // "<|endoftext|>" in text is ordinary text, never eos_id().
  CHECK(tokenizer->encode("<|endoftext|>") ==
        ids{27, 91, 437, 1659, 5239, 91, 29});
}

TEST_CASE("tokenizer decode round trip", "[tokenizer]") {
  const auto tokenizer = shared_tokenizer();
  for (const auto& test : load_fixtures()) {
    INFO("fixture inputs/" << test.name << ".txt");
    // Invalid UTF-8 comes back as the U+FFFD characters that replaced it.
    const std::string expected = encode_utf8(decode_utf8_lossy(test.text));
    CHECK(tokenizer->decode(test.expected) == expected);
  }
  CHECK(tokenizer->decode({tokenizer->eos_id()}) == "<|endoftext|>");
}

TEST_CASE("tokenizer decode rejects unknown id", "[tokenizer]") {
  const auto tokenizer = shared_tokenizer();
  for (const int32_t id : {-1, 50257, 1 << 30}) {
    INFO("id " << id);
    try {
      tokenizer->decode({15496, id});
      FAIL("decode did not throw");
    } catch (const overlord::error& failure) {
      CHECK(failure.code() == errc::invalid_input);
      CHECK_THAT(failure.what(),
                 Catch::Contains(std::to_string(id)) &&
                     Catch::Contains("outside the GPT-2 vocabulary"));
    }
  }
}

TEST_CASE("tokenizer concurrent encode", "[tokenizer]") {
  const auto tokenizer = shared_tokenizer();
  const std::vector<fixture> fixtures = load_fixtures();
  constexpr int thread_count = 4;
  constexpr int rounds = 5;
  std::vector<int> mismatches(thread_count, 0);

  std::vector<std::thread> threads;
  for (int thread_index = 0; thread_index < thread_count; ++thread_index) {
    threads.emplace_back([&, thread_index] {
      // Each thread owns its cache, and odd threads use none.
      gpt2_piece_cache cache(256);
      for (int round = 0; round < rounds; ++round) {
        for (const auto& test : fixtures) {
          const ids found = thread_index % 2 == 0
                                ? tokenizer->encode(test.text, cache)
                                : tokenizer->encode(test.text);
          if (found != test.expected)
            ++mismatches[thread_index];
        }
      }
    });
  }
  for (auto& thread : threads)
    thread.join();

  for (int thread_index = 0; thread_index < thread_count; ++thread_index) {
    INFO("thread " << thread_index);
    CHECK(mismatches[thread_index] == 0);
  }
}

TEST_CASE("piece cache clears for other tokenizer", "[tokenizer]") {
  const auto first = shared_tokenizer();
  const auto second = gpt2_tokenizer::load(gpt2_vocab_directory());
  // Rare words need merging, so they go through the cache.
  const std::string text = "Xylophonists quizzically zigzagged.";
  gpt2_piece_cache cache;

  const ids expected = first->encode(text);
  CHECK(first->encode(text, cache) == expected);
  const std::size_t misses_first_pass = cache.misses();
  REQUIRE(misses_first_pass > 0);
  CHECK(first->encode(text, cache) == expected);
  CHECK(cache.misses() == misses_first_pass);

  CHECK(second->encode(text, cache) == expected);
  CHECK(cache.misses() == 2 * misses_first_pass);
}

TEST_CASE("tokenizer load missing directory", "[tokenizer][load]") {
  const auto directory =
      make_temporary_directory("missing") / "no_such_directory";
  const overlord::error failure = load_error(directory);
  CHECK(failure.code() == errc::not_found);
  CHECK_THAT(failure.what(), Catch::Contains(directory.string()) &&
                                 Catch::Contains("encoder.json"));
}

TEST_CASE("tokenizer load missing vocab.bpe", "[tokenizer][load]") {
  const auto directory = make_temporary_directory("no_merges");
  std::filesystem::copy_file(
      std::filesystem::path(gpt2_vocab_directory()) / "encoder.json",
      directory / "encoder.json");
  const overlord::error failure = load_error(directory);
  CHECK(failure.code() == errc::not_found);
  CHECK_THAT(failure.what(), Catch::Contains("vocab.bpe"));
}

TEST_CASE("tokenizer load invalid encoder.json", "[tokenizer][load]") {
  const auto directory = make_temporary_directory("bad_json");
  write_file(directory / "vocab.bpe", "#version: 0.2\n");

  write_file(directory / "encoder.json", "{\"a\": 0,");
  overlord::error failure = load_error(directory);
  CHECK(failure.code() == errc::invalid_input);
  CHECK_THAT(failure.what(), Catch::Contains("encoder.json") &&
                                 Catch::Contains("not valid JSON"));

  write_file(directory / "encoder.json", "{\"\\u4e2d\": 0}");
  failure = load_error(directory);
  CHECK_THAT(failure.what(), Catch::Contains("U+4E2D"));

  write_file(directory / "encoder.json", "{\"a\": 0, \"b\": 5}");
  failure = load_error(directory);
  CHECK_THAT(failure.what(),
             Catch::Contains("\"b\"") && Catch::Contains("[0, 2)"));

  write_file(directory / "encoder.json", "{\"a\": 0, \"<|endoftext|>\": 1}");
  failure = load_error(directory);
  CHECK_THAT(failure.what(), Catch::Contains("no token for byte 0"));
}

TEST_CASE("tokenizer load mismatched vocab.bpe", "[tokenizer][load]") {
  const std::filesystem::path source(gpt2_vocab_directory());
  const auto directory = make_temporary_directory("swapped_merges");
  std::filesystem::copy_file(source / "encoder.json",
                             directory / "encoder.json");

  // Swap the first two merges: their results keep their ids in
  // encoder.json, so the merge order no longer follows the ids.
  std::string merges = read_bytes(source / "vocab.bpe");
  const std::size_t first = merges.find('\n') + 1;
  const std::size_t second = merges.find('\n', first) + 1;
  const std::size_t third = merges.find('\n', second) + 1;
  const std::string swapped = merges.substr(second, third - second) +
                              merges.substr(first, second - first);
  merges.replace(first, third - first, swapped);
  write_file(directory / "vocab.bpe", merges);

  const overlord::error failure = load_error(directory);
  CHECK(failure.code() == errc::invalid_input);
  CHECK_THAT(failure.what(), Catch::Contains("line 2 of") &&
                                 Catch::Contains("vocab.bpe") &&
                                 Catch::Contains("must have id 256"));
}
