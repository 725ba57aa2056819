// Fuzz target: the WebDataset tar reader (sources/webdataset,
// read_webdataset_shard) on arbitrary shard bytes, under the three
// bad-input policies. Image decoding is not part of it. Properties
// checked for every input:
// - with skip, sample keys are "<shard>:<member key>" and unique, image
//   extensions are jpg, jpeg or png, and no member exceeds
//   max_member_bytes;
// - with fail, the reader throws overlord::error(invalid_input) exactly
//   when skip reported a problem, and otherwise returns the same samples;
// - with quarantine, a shard with a problem gives no sample and one
//   "quarantined" record after skip's records, and a clean shard gives
//   skip's samples;
// - with skip, reads in 1 KiB ranges return the same samples and records
//   through a cache of tar headers as without one, on the pass that fills
//   the cache and on the pass that reads through it;
// - no other exception escapes.

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "sources/webdataset.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

using overlord::sources::bad_input_action;
using overlord::sources::read_webdataset_shard;
using overlord::sources::tar_index_cache;
using overlord::sources::webdataset_options;
using overlord::sources::webdataset_result;

constexpr const char* shard_name = "fuzz.tar";

// Small enough that the fuzzer reaches the oversize path.
constexpr uint64_t max_member_bytes = 2048;

webdataset_result read_with(const std::string& path, bad_input_action action) {
  webdataset_options options;
  options.on_bad_input = action;
  options.max_member_bytes = max_member_bytes;
  return read_webdataset_shard(path, shard_name, options);
}

bool same_samples(const webdataset_result& a, const webdataset_result& b) {
  if (a.samples.size() != b.samples.size())
    return false;
  for (std::size_t i = 0; i < a.samples.size(); ++i) {
    const auto& x = a.samples[i];
    const auto& y = b.samples[i];
    if (x.key != y.key || x.image != y.image || x.caption != y.caption ||
        x.image_extension != y.image_extension)
      return false;
  }
  return true;
}

// Reads the shard at `path` with skip in ranges of `range` bytes.
webdataset_result read_in_ranges(const std::string& path, std::size_t size,
                                 int64_t range, tar_index_cache* cache) {
  webdataset_result joined;
  for (int64_t begin = 0; begin == 0 || begin < static_cast<int64_t>(size);
       begin += range) {
    webdataset_options options;
    options.max_member_bytes = max_member_bytes;
    options.index_cache = cache;
    options.range_begin = begin;
    if (begin + range < static_cast<int64_t>(size))
      options.range_end = begin + range;
    auto part = read_webdataset_shard(path, shard_name, options);
    for (auto& sample : part.samples)
      joined.samples.push_back(std::move(sample));
    for (auto& record : part.skipped)
      joined.skipped.push_back(std::move(record));
  }
  return joined;
}

bool same_records(const webdataset_result& a, const webdataset_result& b) {
  if (a.skipped.size() != b.skipped.size())
    return false;
  for (std::size_t i = 0; i < a.skipped.size(); ++i)
    if (a.skipped[i].kind != b.skipped[i].kind ||
        a.skipped[i].where != b.skipped[i].where ||
        a.skipped[i].detail != b.skipped[i].detail)
      return false;
  return true;
}

void check_samples(const webdataset_result& result) {
  const std::string prefix = std::string(shard_name) + ":";
  std::set<std::string> keys;
  for (const auto& sample : result.samples) {
    FUZZ_REQUIRE(sample.key.rfind(prefix, 0) == 0,
                 "key '" + sample.key + "' lacks the shard name");
    FUZZ_REQUIRE(keys.insert(sample.key).second,
                 "duplicate sample key " + sample.key);
    FUZZ_REQUIRE(sample.image_extension == "jpg" ||
                     sample.image_extension == "jpeg" ||
                     sample.image_extension == "png",
                 "image extension '" + sample.image_extension + "'");
    FUZZ_REQUIRE(sample.image.size() <= max_member_bytes,
                 "kept an oversize image in " + sample.key);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::string path =
      overlord::fuzzing::write_scratch_file(shard_name, bytes);

  const webdataset_result skipping = read_with(path, bad_input_action::skip);
  check_samples(skipping);
  const bool bad = !skipping.skipped.empty();

  const webdataset_result quarantined =
      read_with(path, bad_input_action::quarantine);
  if (bad) {
    FUZZ_REQUIRE(quarantined.samples.empty(),
                 "quarantine kept samples of a shard with a problem");
    FUZZ_REQUIRE(quarantined.skipped.size() == skipping.skipped.size() + 1 &&
                     quarantined.skipped.back().kind == "quarantined",
                 "quarantine must add one quarantined record");
  } else {
    FUZZ_REQUIRE(same_samples(quarantined, skipping) &&
                     quarantined.skipped.empty(),
                 "quarantine changed a clean shard");
  }

  bool threw = false;
  webdataset_result failing;
  try {
    failing = read_with(path, bad_input_action::fail);
  } catch (const overlord::error& e) {
    threw = true;
    FUZZ_REQUIRE(e.code() == overlord::errc::invalid_input,
                 std::string("unexpected error code: ") + e.what());
  }
  FUZZ_REQUIRE(threw == bad, threw ? "fail threw on a shard skip accepted"
                                   : "fail accepted a shard skip reported");
  if (!threw)
    FUZZ_REQUIRE(same_samples(failing, skipping),
                 "fail and skip kept different samples");

  const webdataset_result ranged = read_in_ranges(path, size, 1024, nullptr);
  tar_index_cache cache;
  for (int pass = 0; pass < 2; ++pass) {
    const webdataset_result cached = read_in_ranges(path, size, 1024, &cache);
    FUZZ_REQUIRE(same_samples(cached, ranged),
                 "ranges through the header cache kept other samples");
    FUZZ_REQUIRE(same_records(cached, ranged),
                 "ranges through the header cache reported other problems");
  }
  return 0;
}
