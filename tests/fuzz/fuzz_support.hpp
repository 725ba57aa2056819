// Helpers shared by the fuzz targets in this folder. A failed invariant
// prints what broke and aborts, so that libFuzzer saves the input as a
// crash and the gcc-built replay test fails on it too.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace overlord::fuzzing {

[[noreturn]] inline void fail_invariant(const char* file, int line,
                                        const char* condition,
                                        const std::string& detail) {
  std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s: %s\n", file, line,
               condition, detail.c_str());
  std::abort();
}

// Aborts with `detail` unless `condition` holds.
#define FUZZ_REQUIRE(condition, detail)                                  \
  do {                                                                   \
    if (!(condition))                                                    \
      ::overlord::fuzzing::fail_invariant(__FILE__, __LINE__, #condition, \
                                          (detail));                     \
  } while (false)

// A folder of this process under $TEST_TMPDIR or $TMPDIR (else /tmp), for
// code under test that reads files by path. Created on first use and
// removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path path = [] {
    const char* base = std::getenv("TEST_TMPDIR");
    if (base == nullptr || *base == '\0')
      base = std::getenv("TMPDIR");
    std::filesystem::path dir = std::filesystem::path(
        base != nullptr && *base != '\0' ? base : "/tmp");
    dir /= "overlord-fuzz-" + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(scratch_dir(), ignored);
    });
    return dir;
  }();
  return path;
}

// Writes `bytes` to `name` in scratch_dir() and returns the path.
inline std::string write_scratch_file(const std::string& name,
                                      std::string_view bytes) {
  const auto path = scratch_dir() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz: cannot write scratch file %s\n",
                 path.c_str());
    std::abort();
  }
  return path.string();
}

// Returns the folder with GPT-2's encoder.json and vocab.bpe:
// $OVERLORD_GPT2_DIR, else $OVERLORD_DATA_DIR/gpt2. Exits with a message
// when neither is set, because a target without its vocabulary tests
// nothing.
inline std::string gpt2_directory() {
  if (const char* value = std::getenv("OVERLORD_GPT2_DIR"); value && *value)
    return value;
  if (const char* data = std::getenv("OVERLORD_DATA_DIR"); data && *data)
    return (std::filesystem::path(data) / "gpt2").string();
  std::fprintf(stderr,
               "fuzz: set OVERLORD_GPT2_DIR (a folder with GPT-2's "
               "encoder.json and vocab.bpe) or OVERLORD_DATA_DIR (the demo "
               "data folder that scripts/fetch-demo-data fills)\n");
  std::exit(2);
}

}  // namespace overlord::fuzzing
