// Range reads of one large WebDataset shard, with and without a cache of
// its tar headers. Without the cache every range scans all the shard's
// headers; with it, only the first read of the shard does.
//
// usage: tar_index_bench WORK_DIR [SAMPLES] [RANGE_BYTES]
// Writes WORK_DIR/large.tar (SAMPLES samples of about 100 KB), prints
// figures, then one JSON line.

#include <archive.h>
#include <archive_entry.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include "common/error.hpp"
#include "sources/webdataset.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using overlord::sources::read_webdataset_shard;
using overlord::sources::tar_index_cache;
using overlord::sources::webdataset_options;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

void add_member(archive* writer, const std::string& name,
                const std::string& content) {
  archive_entry* entry = archive_entry_new();
  archive_entry_set_pathname(entry, name.c_str());
  archive_entry_set_size(entry, static_cast<la_int64_t>(content.size()));
  archive_entry_set_filetype(entry, AE_IFREG);
  archive_entry_set_perm(entry, 0644);
  archive_write_header(writer, entry);
  archive_write_data(writer, content.data(), content.size());
  archive_entry_free(entry);
}

// Writes `samples` samples: an image member of 80 to 120 KB of random
// bytes (not decoded here) and a short caption.
void write_shard(const std::string& path, int samples) {
  archive* writer = archive_write_new();
  archive_write_set_format_ustar(writer);
  if (archive_write_open_filename(writer, path.c_str()) != ARCHIVE_OK)
    throw overlord::error(overlord::errc::io_error,
                          "failed to write " + path +
                              "; check that WORK_DIR exists and is writable");
  std::mt19937_64 random(7);
  std::string bytes(120000, '\0');
  for (auto& c : bytes)
    c = static_cast<char>(random());
  for (int i = 0; i < samples; ++i) {
    char key[16];
    std::snprintf(key, sizeof key, "%07d", i);
    add_member(writer, std::string(key) + ".png",
               bytes.substr(0, 80000 + random() % 40000));
    add_member(writer, std::string(key) + ".txt", "caption " + std::string(key));
  }
  archive_write_close(writer);
  archive_write_free(writer);
}

// Reads the shard in ranges of `range` bytes; returns the samples read.
size_t read_in_ranges(const std::string& path, int64_t size, int64_t range,
                      tar_index_cache* cache) {
  size_t samples = 0;
  for (int64_t begin = 0; begin < size; begin += range) {
    webdataset_options options;
    options.range_begin = begin;
    if (begin + range < size)
      options.range_end = begin + range;
    options.index_cache = cache;
    samples += read_webdataset_shard(path, "large.tar", options).samples.size();
  }
  return samples;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tar_index_bench WORK_DIR [SAMPLES] [RANGE_BYTES]\n");
    return 2;
  }
  const std::string path = std::string(argv[1]) + "/large.tar";
  const int samples = argc > 2 ? std::stoi(argv[2]) : 2000;
  const int64_t range = argc > 3 ? std::stoll(argv[3]) : (int64_t{1} << 20);
  try {
    write_shard(path, samples);
    const auto size = static_cast<int64_t>(std::filesystem::file_size(path));

    auto start = clock_type::now();
    const size_t whole =
        read_webdataset_shard(path, "large.tar", webdataset_options{}).samples.size();
    const double whole_s = seconds_since(start);

    start = clock_type::now();
    const size_t plain = read_in_ranges(path, size, range, nullptr);
    const double plain_s = seconds_since(start);

    tar_index_cache cache;
    start = clock_type::now();
    const size_t cached = read_in_ranges(path, size, range, &cache);
    const double cached_s = seconds_since(start);

    if (plain != whole || cached != whole)
      throw overlord::error(overlord::errc::internal,
                            "range reads returned " + std::to_string(plain) +
                                " and " + std::to_string(cached) +
                                " samples, the whole read " +
                                std::to_string(whole));
    const int64_t ranges = (size + range - 1) / range;
    std::printf("shard: %d samples, %.1f MB, read in %lld ranges of %lld bytes\n",
                samples, size / 1e6, static_cast<long long>(ranges),
                static_cast<long long>(range));
    std::printf("whole read: %.3f s\n", whole_s);
    std::printf("ranges without the header cache: %.3f s (%.2f ms per range)\n",
                plain_s, plain_s * 1e3 / ranges);
    std::printf("ranges with the header cache: %.3f s (%.2f ms per range), "
                "%llu reads through it, %llu scans after a mismatch\n",
                cached_s, cached_s * 1e3 / ranges,
                static_cast<unsigned long long>(cache.hits()),
                static_cast<unsigned long long>(cache.fallbacks()));
    std::printf(
        "{\"samples\": %d, \"shard_mb\": %.1f, \"ranges\": %lld, "
        "\"whole_read_s\": %.3f, \"ranges_s\": %.3f, \"ranges_cached_s\": %.3f, "
        "\"speedup\": %.2f}\n",
        samples, size / 1e6, static_cast<long long>(ranges), whole_s, plain_s,
        cached_s, plain_s / cached_s);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tar_index_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
