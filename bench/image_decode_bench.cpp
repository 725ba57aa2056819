// Single-core throughput of the image-text reader on the demo shards:
// reading and grouping the tar members alone, then reading plus decoding,
// resizing and normalising every image at two pixel budgets.
//
// usage: image_decode_bench DATA_DIR
// Prints figures, then one JSON line.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "sources/webdataset.hpp"

namespace fs = std::filesystem;
using overlord::sources::image_options;
using overlord::sources::read_image_text_shard;
using overlord::sources::read_webdataset_shard;
using overlord::sources::webdataset_options;

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

struct decode_figures {
  uint64_t samples = 0;
  uint64_t patches = 0;
  double seconds = 0;
};

// Reads and decodes every shard once with `options`; best of `repeats`.
decode_figures time_decode(const std::vector<std::string>& shards,
                           const image_options& options, int repeats) {
  decode_figures best;
  best.seconds = 1e30;
  for (int i = 0; i < repeats; ++i) {
    decode_figures run;
    auto start = clock_type::now();
    for (const auto& shard : shards) {
      auto result = read_image_text_shard(shard, shard, webdataset_options{},
                                          options);
      if (!result.skipped.empty())
        throw overlord::error(overlord::errc::invalid_input,
                              shard + ": " + result.skipped[0].kind + " " +
                                  result.skipped[0].where);
      run.samples += result.samples.size();
      for (const auto& sample : result.samples)
        run.patches += sample.image.patches;
    }
    run.seconds = seconds_since(start);
    if (run.seconds < best.seconds)
      best = run;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: image_decode_bench DATA_DIR\n";
    return 2;
  }
  std::vector<std::string> shards;
  for (const auto& entry : fs::directory_iterator(fs::path(argv[1]) / "images"))
    if (entry.path().extension() == ".tar")
      shards.push_back(entry.path().string());
  std::sort(shards.begin(), shards.end());
  if (shards.empty()) {
    std::cerr << "no shards in " << argv[1]
              << "/images; run scripts/fetch-demo-data\n";
    return 1;
  }

  try {
    uint64_t bytes = 0;
    for (const auto& shard : shards)
      bytes += fs::file_size(shard);

    double read_seconds = 1e30;
    uint64_t samples = 0;
    for (int i = 0; i < 3; ++i) {
      auto start = clock_type::now();
      samples = 0;
      for (const auto& shard : shards)
        samples += read_webdataset_shard(shard, shard, webdataset_options{})
                       .samples.size();
      read_seconds = std::min(read_seconds, seconds_since(start));
    }
    const double mb = bytes / 1e6;
    std::printf("%zu shards, %.1f MB, %llu samples\n", shards.size(), mb,
                static_cast<unsigned long long>(samples));
    std::printf("tar read and grouping: %.1f MB/s\n", mb / read_seconds);

    image_options small;
    small.max_pixels = 224 * 224;
    small.patch_size = 14;
    image_options large;
    large.max_pixels = 384 * 384;
    large.patch_size = 16;
    // The budget bench/stall uses.
    image_options stall;
    stall.max_pixels = 512 * 512;
    stall.patch_size = 16;
    auto at_small = time_decode(shards, small, 2);
    auto at_large = time_decode(shards, large, 2);
    auto at_stall = time_decode(shards, stall, 2);
    const std::pair<const char*, const decode_figures*> budgets[] = {
        {"224x224/14", &at_small},
        {"384x384/16", &at_large},
        {"512x512/16", &at_stall}};
    for (const auto& [name, figures] : budgets)
      std::printf("decode to %s: %.1f samples/s, %.2f ms per sample, %.0f "
                  "patches per sample\n",
                  name, figures->samples / figures->seconds,
                  1000 * figures->seconds / figures->samples,
                  static_cast<double>(figures->patches) / figures->samples);

    std::printf(
        "{\"bench\": \"image_decode\", \"shards\": %zu, \"mb\": %.1f, "
        "\"samples\": %llu, \"tar_mb_per_s\": %.1f, "
        "\"samples_per_s_224\": %.1f, \"samples_per_s_384\": %.1f, "
        "\"samples_per_s_512\": %.1f, \"decode_mb_per_s_224\": %.1f}\n",
        shards.size(), mb, static_cast<unsigned long long>(samples),
        mb / read_seconds, at_small.samples / at_small.seconds,
        at_large.samples / at_large.seconds,
        at_stall.samples / at_stall.seconds, mb / at_small.seconds);
  } catch (const std::exception& e) {
    std::cerr << "image_decode_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
