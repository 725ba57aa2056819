// Shared helpers of the tokenizer tests: fixture files, the GPT-2
// vocabulary directory, and UTF-8 literals from u8"" strings.
#pragma once

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace overlord::sources::testing {

// Tests run in their runfiles tree, where the fixtures are under
// tests/fixtures/tokenizer/.
inline std::filesystem::path fixture_path(const std::string& relative) {
  return std::filesystem::path("tests/fixtures/tokenizer") / relative;
}

inline std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream)
    FAIL("cannot open test file " << path);
  std::ostringstream contents;
  contents << stream.rdbuf();
  return contents.str();
}

// Returns the repository root, found through the runfiles symlink of a
// fixture, which points into the source tree under Bazel's sandboxes. Empty
// if the fixture is not a symlink.
inline std::filesystem::path find_repository_root() {
  std::error_code status;
  const auto fixture = fixture_path("code_point_classes.txt");
  if (!std::filesystem::is_symlink(fixture, status))
    return {};
  const auto target = std::filesystem::canonical(fixture, status);
  if (status)
    return {};
  // <root>/tests/fixtures/tokenizer/code_point_classes.txt
  return target.parent_path().parent_path().parent_path().parent_path();
}

// Returns the GPT-2 vocabulary directory (encoder.json and vocab.bpe):
// $OVERLORD_GPT2_DIR, else $OVERLORD_DATA_DIR/gpt2, else data/demo/gpt2 in
// the repository. Bazel passes these variables to tests only when asked,
// e.g. --test_env=OVERLORD_GPT2_DIR=/abs/path. Fails the test if the
// directory has no encoder.json, because a silent skip would hide a parity
// regression.
inline std::string gpt2_vocab_directory() {
  std::filesystem::path directory;
  std::string source;
  const std::filesystem::path root = find_repository_root();
  if (const char* value = std::getenv("OVERLORD_GPT2_DIR"); value && *value) {
    directory = value;
    source = "$OVERLORD_GPT2_DIR";
  } else if (const char* data = std::getenv("OVERLORD_DATA_DIR");
             data && *data) {
    directory = std::filesystem::path(data) / "gpt2";
    source = "$OVERLORD_DATA_DIR/gpt2";
  } else {
    directory = root / "data/demo/gpt2";
    source = "data/demo/gpt2 in the repository";
  }
  if (directory.is_relative() && !root.empty())
    directory = root / directory;

  std::error_code status;
  if (!std::filesystem::exists(directory / "encoder.json", status))
    FAIL("GPT-2 vocabulary not found: " << directory << " (" << source
         << ") has no encoder.json. Run scripts/fetch-demo-data, or pass "
            "--test_env=OVERLORD_GPT2_DIR=/absolute/path/to/gpt2 to bazel "
            "test.");
  return directory.string();
}

// Converts a u8"" literal to std::string (char8_t in C++20, char in C++17).
template <class Char, std::size_t size>
std::string utf8(const Char (&text)[size]) {
  return std::string(reinterpret_cast<const char*>(text), size - 1);
}

}  // namespace overlord::sources::testing
