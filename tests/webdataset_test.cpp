#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.hpp"
#include "sources/webdataset.hpp"
#include "tests/image_fixtures.hpp"
#include "tests/test_files.hpp"

using overlord::errc;
using overlord::error;
using overlord::sources::bad_input_action;
using overlord::sources::image_options;
using overlord::sources::read_image_text_shard;
using overlord::sources::read_webdataset_shard;
using overlord::sources::webdataset_options;
using overlord::testing::encode_jpeg;
using overlord::testing::encode_png;
using overlord::testing::flat_rgb;
using overlord::testing::temp_dir;
using overlord::testing::write_tar;

namespace {

using member_list = std::vector<std::pair<std::string, std::string>>;

std::string small_jpeg() {
  return encode_jpeg(flat_rgb(8, 8, 90, 120, 150), 8, 8);
}

std::string small_png() { return encode_png(flat_rgb(4, 6, 1, 2, 3), 4, 6); }

webdataset_options policy(bad_input_action action) {
  webdataset_options options;
  options.on_bad_input = action;
  return options;
}

image_options small_images() {
  image_options options;
  options.max_pixels = 256;
  options.patch_size = 4;
  return options;
}

// Two good samples around one bad one, as a real shard would have them.
member_list around(const member_list& bad) {
  member_list members = {{"000001.jpg", small_jpeg()},
                         {"000001.txt", "first"}};
  members.insert(members.end(), bad.begin(), bad.end());
  members.push_back({"000009.png", small_png()});
  members.push_back({"000009.txt", "last"});
  return members;
}

std::vector<std::string> kinds_of(const std::vector<overlord::sources::bad_record>& records) {
  std::vector<std::string> kinds;
  for (const auto& record : records)
    kinds.push_back(record.kind);
  return kinds;
}

struct bad_case {
  const char* name;
  const char* kind;
  const char* where;  // expected `where` of the first record
  member_list bad_members;
  size_t samples_kept = 2;  // good samples left under skip
};

}  // namespace

TEST_CASE("webdataset groups members by key", "[webdataset]") {
  temp_dir dir("wds-group");
  auto jpeg = small_jpeg();
  auto png = small_png();
  auto path = (dir.path() / "shard-0.tar").string();
  write_tar(path, {{"part/000001.jpg", jpeg},
                   {"part/000001.txt", "a cat on a mat"},
                   {"part/000002.json", "{\"text\": \"x\", \"alt\": \"two dogs\"}"},
                   {"part/000002.PNG", png},
                   {"part/000002.cls", "7"},
                   {"README", "no extension, not a sample"}});
  webdataset_options options;
  options.caption_field = "alt";
  auto result = read_webdataset_shard(path, "shard-0.tar", options);
  CHECK(result.skipped.empty());
  REQUIRE(result.samples.size() == 2);
  CHECK(result.samples[0].key == "shard-0.tar:part/000001");
  CHECK(result.samples[0].caption == "a cat on a mat");
  CHECK(result.samples[0].image == jpeg);
  CHECK(result.samples[0].image_extension == "jpg");
  CHECK(result.samples[0].image_member == "part/000001.jpg");
  CHECK(result.samples[1].key == "shard-0.tar:part/000002");
  CHECK(result.samples[1].caption == "two dogs");
  CHECK(result.samples[1].image == png);
  CHECK(result.samples[1].image_extension == "png");
}

TEST_CASE("webdataset key stops at the first dot", "[webdataset]") {
  temp_dir dir("wds-dots");
  auto path = (dir.path() / "s.tar").string();
  write_tar(path, {{"a.b/000001.x.jpg", small_jpeg()},
                   {"a.b/000001.x.txt", "caption"}});
  auto result = read_webdataset_shard(path, "s.tar", webdataset_options{});
  // "000001.x.jpg" has the extension "x.jpg", which names no image.
  REQUIRE(result.samples.empty());
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "missing_member");
  CHECK(result.skipped[0].where == "s.tar:a.b/000001.x.jpg");
}

TEST_CASE("webdataset bad shards under each policy", "[webdataset]") {
  const std::vector<bad_case> cases = {
      {"missing caption", "missing_member", "shard.tar:000005.jpg",
       {{"000005.jpg", small_jpeg()}}},
      {"missing image", "missing_member", "shard.tar:000005.txt",
       {{"000005.txt", "caption without image"}}},
      {"members not adjacent", "split_sample", "shard.tar:000005.txt",
       {{"000005.jpg", small_jpeg()},
        {"000006.jpg", small_jpeg()},
        {"000006.txt", "six"},
        {"000005.txt", "five, too late"}},
       3},
      {"two images under one key", "duplicate_member", "shard.tar:000005.png",
       {{"000005.jpg", small_jpeg()},
        {"000005.png", small_png()},
        {"000005.txt", "five"}}},
      {"caption JSON invalid", "bad_caption", "shard.tar:000005.json",
       {{"000005.jpg", small_jpeg()}, {"000005.json", "{\"caption\": "}}},
      {"caption field missing", "bad_caption", "shard.tar:000005.json",
       {{"000005.jpg", small_jpeg()}, {"000005.json", "{\"text\": \"x\"}"}}},
      {"caption JSON not an object", "bad_caption", "shard.tar:000005.json",
       {{"000005.jpg", small_jpeg()}, {"000005.json", "[\"a caption\"]"}}},
      {"undecodable image", "bad_image", "shard.tar:000005.jpg",
       {{"000005.jpg", "\xFF\xD8\xFF garbage"}, {"000005.txt", "five"}}},
  };

  for (const auto& item : cases) {
    temp_dir dir("wds-bad");
    auto path = (dir.path() / "shard.tar").string();
    write_tar(path, around(item.bad_members));

    INFO(item.name);
    {
      auto result = read_image_text_shard(
          path, "shard.tar", policy(bad_input_action::skip), small_images());
      REQUIRE(result.samples.size() == item.samples_kept);
      CHECK(result.samples.front().key == "shard.tar:000001");
      CHECK(result.samples.back().key == "shard.tar:000009");
      REQUIRE(!result.skipped.empty());
      CHECK(result.skipped[0].kind == item.kind);
      CHECK(result.skipped[0].where == item.where);
    }
    {
      auto first = read_image_text_shard(
          path, "shard.tar", policy(bad_input_action::quarantine),
          small_images());
      CHECK(first.samples.empty());
      auto kinds = kinds_of(first.skipped);
      REQUIRE(kinds.size() >= 2);
      CHECK(kinds.front() == item.kind);
      CHECK(kinds.back() == "quarantined");
      CHECK(first.skipped.back().where == "shard.tar");
      // The same decision on a rerun.
      auto second = read_image_text_shard(
          path, "shard.tar", policy(bad_input_action::quarantine),
          small_images());
      CHECK(second.samples.empty());
      CHECK(kinds_of(second.skipped) == kinds);
    }
    {
      try {
        read_image_text_shard(path, "shard.tar",
                              policy(bad_input_action::fail), small_images());
        FAIL("no exception");
      } catch (const error& e) {
        CHECK(e.code() == errc::invalid_input);
        std::string message = e.what();
        CHECK(message.find(item.where) == 0);
        CHECK(message.find(item.kind) != std::string::npos);
      }
    }
  }
}

TEST_CASE("webdataset truncated tar under each policy", "[webdataset]") {
  temp_dir dir("wds-truncated");
  auto path = (dir.path() / "cut.tar").string();
  auto big = encode_png(flat_rgb(64, 64, 7, 8, 9), 64, 64);
  write_tar(path, {{"000001.jpg", small_jpeg()},
                   {"000001.txt", "first"},
                   {"000002.png", big},
                   {"000002.txt", "second"}});
  // Keep the first sample (4 blocks of 512 bytes with small members),
  // the header of 000002.png and part of its data.
  const auto full = std::filesystem::file_size(path);
  const auto first_sample = 512 + 512 * ((small_jpeg().size() + 511) / 512) +
                            512 + 512;
  std::filesystem::resize_file(path, first_sample + 512 + 100);
  REQUIRE(std::filesystem::file_size(path) < full);

  auto skip = read_image_text_shard(path, "cut.tar",
                                    policy(bad_input_action::skip),
                                    small_images());
  REQUIRE(skip.samples.size() == 1);
  CHECK(skip.samples[0].key == "cut.tar:000001");
  REQUIRE(!skip.skipped.empty());
  CHECK(skip.skipped[0].kind == "truncated_tar");
  // The byte offset of the member whose data is cut short.
  CHECK(skip.skipped[0].where ==
        "cut.tar@" + std::to_string(first_sample) + " (000002.png)");

  auto quarantine = read_image_text_shard(
      path, "cut.tar", policy(bad_input_action::quarantine), small_images());
  CHECK(quarantine.samples.empty());
  CHECK(quarantine.skipped.back().kind == "quarantined");

  CHECK_THROWS_AS(read_image_text_shard(path, "cut.tar",
                                        policy(bad_input_action::fail),
                                        small_images()),
                  error);
}

TEST_CASE("webdataset reports a file that is not a tar", "[webdataset]") {
  temp_dir dir("wds-corrupt");
  auto path = dir.write("junk.tar", std::string(2000, 'x'));
  auto result = read_webdataset_shard(path, "junk.tar", webdataset_options{});
  CHECK(result.samples.empty());
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "corrupt_tar");
  CHECK(result.skipped[0].where == "junk.tar@0");
}

TEST_CASE("webdataset reports a missing shard", "[webdataset]") {
  auto result = read_webdataset_shard("/nonexistent/overlord/x.tar", "x.tar",
                                      webdataset_options{});
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "unreadable_file");
  CHECK(result.skipped[0].where == "x.tar");
}

TEST_CASE("webdataset decodes images of a shard", "[webdataset]") {
  temp_dir dir("wds-decode");
  auto path = (dir.path() / "ok.tar").string();
  write_tar(path, {{"000001.png", encode_png(flat_rgb(32, 64, 255, 0, 0), 32, 64)},
                   {"000001.txt", "red"}});
  auto result = read_image_text_shard(path, "ok.tar", webdataset_options{},
                                      small_images());
  REQUIRE(result.samples.size() == 1);
  const auto& image = result.samples[0].image;
  CHECK(image.width == 2 * image.height);
  CHECK(static_cast<uint64_t>(image.width) * image.height <= 256);
  CHECK(image.patches == ((image.height + 3) / 4) * ((image.width + 3) / 4));
  CHECK(result.samples[0].caption == "red");
}

namespace {

// Reads `path` in consecutive byte ranges of `range` bytes, the last one
// open-ended as the pool reads them, and joins the results.
overlord::sources::image_text_result read_in_ranges(
    const std::string& path, int64_t range,
    overlord::sources::tar_index_cache* cache = nullptr) {
  const auto size = static_cast<int64_t>(std::filesystem::file_size(path));
  const int64_t parts = std::max<int64_t>(1, (size + range - 1) / range);
  overlord::sources::image_text_result joined;
  for (int64_t part = 0; part < parts; ++part) {
    auto options = policy(bad_input_action::skip);
    options.index_cache = cache;
    options.range_begin = part * range;
    if (part + 1 < parts)
      options.range_end = options.range_begin + range;
    auto result = read_image_text_shard(path, "shard.tar", options, small_images());
    for (auto& sample : result.samples)
      joined.samples.push_back(std::move(sample));
    for (auto& record : result.skipped)
      joined.skipped.push_back(std::move(record));
  }
  return joined;
}

// Checks that `got` contains the samples and bad records of `expected`,
// in order, comparing the records' details too when `details` is set.
void check_same_result(const overlord::sources::image_text_result& got,
                       const overlord::sources::image_text_result& expected,
                       bool details) {
  REQUIRE(got.samples.size() == expected.samples.size());
  for (size_t i = 0; i < expected.samples.size(); ++i) {
    CHECK(got.samples[i].key == expected.samples[i].key);
    CHECK(got.samples[i].caption == expected.samples[i].caption);
    CHECK(got.samples[i].image.pixels == expected.samples[i].image.pixels);
  }
  REQUIRE(got.skipped.size() == expected.skipped.size());
  for (size_t i = 0; i < expected.skipped.size(); ++i) {
    CHECK(got.skipped[i].kind == expected.skipped[i].kind);
    CHECK(got.skipped[i].where == expected.skipped[i].where);
    if (details)
      CHECK(got.skipped[i].detail == expected.skipped[i].detail);
  }
}

}  // namespace

TEST_CASE("webdataset ranges together equal a whole read", "[webdataset]") {
  const std::vector<std::pair<const char*, member_list>> shards = {
      {"good", around({{"000005.jpg", small_jpeg()}, {"000005.txt", "five"}})},
      {"missing caption", around({{"000005.jpg", small_jpeg()}})},
      {"members not adjacent",
       around({{"000005.jpg", small_jpeg()},
               {"000006.jpg", small_jpeg()},
               {"000006.txt", "six"},
               {"000005.txt", "five, too late"}})},
      {"two images under one key",
       around({{"000005.jpg", small_jpeg()},
               {"000005.png", small_png()},
               {"000005.txt", "five"}})},
      {"caption JSON invalid",
       around({{"000005.jpg", small_jpeg()}, {"000005.json", "{\"caption\": "}})},
      {"undecodable image",
       around({{"000005.jpg", "\xFF\xD8\xFF garbage"}, {"000005.txt", "five"}})},
  };
  for (const auto& [name, members] : shards) {
    for (bool truncated : {false, true}) {
      temp_dir dir("wds-ranges");
      auto path = (dir.path() / "shard.tar").string();
      write_tar(path, members);
      // Cut inside the data of the last sample's image.
      if (truncated)
        std::filesystem::resize_file(
            path, std::filesystem::file_size(path) - 1024 - 512 - 300);
      auto whole = read_image_text_shard(path, "shard.tar",
                                         policy(bad_input_action::skip),
                                         small_images());
      for (int64_t range : {512, 1024, 1536, 4096}) {
        INFO(name << (truncated ? ", truncated" : "") << ", range " << range);
        auto ranged = read_in_ranges(path, range);
        check_same_result(ranged, whole, false);

        // Through a cache of tar headers: the first pass fills it, the
        // second reads through it, and both match the read without it.
        overlord::sources::tar_index_cache cache;
        for (int pass = 0; pass < 2; ++pass) {
          INFO("pass " << pass << " through the cache");
          check_same_result(read_in_ranges(path, range, &cache), ranged, true);
        }
        // A scan that ended on a read error stores no headers.
        CHECK(cache.stores() == (truncated ? 0u : 1u));
        if (truncated)
          CHECK(cache.hits() == 0);
        else
          CHECK(cache.hits() > 0);
        CHECK(cache.fallbacks() == 0);
      }
    }
  }
}

namespace {

// Spoils the checksum of the ustar header of `member` in the tar at `path`
// and returns the header's offset.
int64_t damage_header(const std::string& path, const std::string& member) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(file)),
                    std::istreambuf_iterator<char>());
  for (size_t offset = 0; offset + 512 <= bytes.size(); offset += 512) {
    if (bytes.compare(offset, member.size() + 1,
                      member.c_str(), member.size() + 1) != 0)
      continue;
    // The checksum is an octal field at byte 148 of the header.
    file.seekp(static_cast<std::streamoff>(offset + 148));
    file.put(bytes[offset + 148] == '1' ? '2' : '1');
    return static_cast<int64_t>(offset);
  }
  throw std::runtime_error("no header of " + member + " in " + path);
}

}  // namespace

TEST_CASE("webdataset bad header checksum", "[webdataset]") {
  temp_dir dir("wds-checksum");
  auto path = (dir.path() / "shard.tar").string();
  // Writes `members` between two good samples, spoils the header of
  // `damaged` (its offset goes to `offset`) and reads the shard with skip.
  int64_t offset = -1;
  auto read_damaged = [&](const member_list& members,
                          const std::string& damaged) {
    write_tar(path, around(members));
    offset = damage_header(path, damaged);
    return read_image_text_shard(path, "shard.tar",
                                 policy(bad_input_action::skip), small_images());
  };

  SECTION("inside the shard") {
    auto whole = read_damaged({{"000005.jpg", small_jpeg()},
                               {"000005.txt", "five"},
                               {"000007.jpg", small_jpeg()},
                               {"000007.txt", "seven"}},
                              "000005.txt");
    // The damaged member may belong to 000005 or 000007, so neither is kept.
    REQUIRE(whole.samples.size() == 2);
    CHECK(whole.samples[0].key == "shard.tar:000001");
    CHECK(whole.samples[1].key == "shard.tar:000009");
    REQUIRE(whole.skipped.size() == 1);
    CHECK(whole.skipped[0].kind == "corrupt_tar");
    CHECK(whole.skipped[0].where == "shard.tar@" + std::to_string(offset));
    CHECK(whole.skipped[0].detail ==
          "header checksum does not match, so libarchive skipped 1024 bytes "
          "from byte " + std::to_string(offset) +
              " to the next valid header at byte " +
              std::to_string(offset + 1024) +
              ". Dropped samples '000005' and '000007', because the damaged "
              "member may belong to either.");
    for (int64_t range : {512, 1024, 4096}) {
      INFO("range " << range);
      overlord::sources::tar_index_cache cache;
      check_same_result(read_in_ranges(path, range), whole, true);
      check_same_result(read_in_ranges(path, range, &cache), whole, true);
      // A shard with a damaged header is never cached.
      CHECK(cache.stores() == 0);
    }

    auto quarantine = read_image_text_shard(
        path, "shard.tar", policy(bad_input_action::quarantine), small_images());
    CHECK(quarantine.samples.empty());
    CHECK(kinds_of(quarantine.skipped) ==
          std::vector<std::string>{"corrupt_tar", "quarantined"});
    CHECK_THROWS_WITH(
        read_image_text_shard(path, "shard.tar", policy(bad_input_action::fail),
                              small_images()),
        Catch::Contains("shard.tar@" + std::to_string(offset) + ": corrupt_tar"));
  }

  SECTION("at the last member") {
    auto whole = read_damaged({{"000005.jpg", small_jpeg()}, {"000005.txt", "five"}},
                              "000009.txt");
    REQUIRE(whole.samples.size() == 2);
    CHECK(whole.samples[1].key == "shard.tar:000005");
    REQUIRE(whole.skipped.size() == 1);
    CHECK(whole.skipped[0].where == "shard.tar@" + std::to_string(offset));
    CHECK(whole.skipped[0].detail ==
          "header checksum does not match, so libarchive skipped from byte " +
              std::to_string(offset) +
              " to the end of the archive. Dropped sample '000009', because "
              "the damaged member may belong to it.");
    check_same_result(read_in_ranges(path, 1024), whole, true);
  }

  SECTION("at the first header") {
    // Format detection alone would reject the file.
    auto whole = read_damaged({{"000005.jpg", small_jpeg()}, {"000005.txt", "five"}},
                              "000001.jpg");
    REQUIRE(offset == 0);
    REQUIRE(whole.samples.size() == 2);
    CHECK(whole.samples[0].key == "shard.tar:000005");
    REQUIRE(whole.skipped.size() == 1);
    CHECK(whole.skipped[0].kind == "corrupt_tar");
    CHECK(whole.skipped[0].where == "shard.tar@0");
    CHECK(whole.skipped[0].detail.find("Dropped sample '000001'") !=
          std::string::npos);
    check_same_result(read_in_ranges(path, 1024), whole, true);
  }

  SECTION("before a file of no sample") {
    // The next sample after the damage is 000007, not the README.
    auto whole = read_damaged({{"000005.jpg", small_jpeg()},
                               {"000005.txt", "five"},
                               {"README", "not a sample"},
                               {"000007.jpg", small_jpeg()},
                               {"000007.txt", "seven"}},
                              "000005.txt");
    REQUIRE(whole.samples.size() == 2);
    CHECK(whole.samples[1].key == "shard.tar:000009");
    REQUIRE(whole.skipped.size() == 1);
    CHECK(whole.skipped[0].detail.find("Dropped samples '000005' and '000007'") !=
          std::string::npos);
    check_same_result(read_in_ranges(path, 1024), whole, true);
  }

  SECTION("before an all-zero block") {
    // libarchive takes the zero block in the damaged member's data for the
    // end of the archive, and the record reports that the rest is not read.
    auto whole = read_damaged({{"000005.jpg", small_jpeg()},
                               {"000005.npy", std::string(2048, '\0')},
                               {"000005.txt", "five"},
                               {"000007.jpg", small_jpeg()},
                               {"000007.txt", "seven"}},
                              "000005.npy");
    REQUIRE(whole.samples.size() == 1);
    CHECK(whole.samples[0].key == "shard.tar:000001");
    REQUIRE(whole.skipped.size() == 1);
    CHECK(whole.skipped[0].detail.find("took for the end of the archive. The "
                                       "rest of the file is not read") !=
          std::string::npos);
    check_same_result(read_in_ranges(path, 1024), whole, true);
  }

  SECTION("after a pax header") {
    // A damaged header after a pax extended header is a fatal error: the
    // read stops there, and the sample before it is dropped too. A name
    // part over 100 bytes needs the pax header.
    const std::string key(110, 'k');
    write_tar(path,
              {{"000001.jpg", small_jpeg()},
               {"000001.txt", "first"},
               {key + ".jpg", small_jpeg()},
               {key + ".txt", "long"}},
              true);
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(file)),
                      std::istreambuf_iterator<char>());
    size_t pax = 0;
    while (pax + 512 <= bytes.size() && bytes[pax + 156] != 'x')
      pax += 512;
    REQUIRE(pax + 512 <= bytes.size());
    // The pax header's size field is octal, and its data fills whole blocks.
    const auto pax_size = std::stoul(bytes.substr(pax + 124, 11), nullptr, 8);
    const size_t header = pax + 512 + (pax_size + 511) / 512 * 512;
    file.seekp(static_cast<std::streamoff>(header + 148));
    file.put(bytes[header + 148] == '1' ? '2' : '1');
    file.close();

    auto whole = read_image_text_shard(
        path, "shard.tar", policy(bad_input_action::skip), small_images());
    CHECK(whole.samples.empty());
    REQUIRE(whole.skipped.size() == 1);
    CHECK(whole.skipped[0].kind == "corrupt_tar");
    CHECK(whole.skipped[0].where == "shard.tar@" + std::to_string(pax));
    CHECK(whole.skipped[0].detail.find("Dropped sample '000001'") !=
          std::string::npos);
    check_same_result(read_in_ranges(path, 1024), whole, true);
  }
}

TEST_CASE("webdataset header cache reads pax entries", "[webdataset]") {
  // Names over 100 bytes need pax extended headers, which precede the
  // member's own header; a directory entry is not a member.
  const std::string folder(120, 'd');
  member_list members = {{folder + "/", ""}};
  for (int i = 0; i < 12; ++i) {
    const std::string key = folder + "/" + std::to_string(100 + i);
    members.push_back({key + ".png", small_png()});
    members.push_back({key + ".txt", "caption " + std::to_string(i)});
  }
  temp_dir dir("wds-pax");
  auto path = (dir.path() / "shard.tar").string();
  write_tar(path, members, true);
  auto whole = read_image_text_shard(path, "shard.tar",
                                     policy(bad_input_action::skip),
                                     small_images());
  REQUIRE(whole.samples.size() == 12);
  overlord::sources::tar_index_cache cache;
  for (int pass = 0; pass < 2; ++pass) {
    INFO("pass " << pass);
    auto cached = read_in_ranges(path, 1024, &cache);
    CHECK(cached.skipped.empty());
    REQUIRE(cached.samples.size() == whole.samples.size());
    for (size_t i = 0; i < whole.samples.size(); ++i) {
      CHECK(cached.samples[i].key == whole.samples[i].key);
      CHECK(cached.samples[i].caption == whole.samples[i].caption);
    }
  }
  CHECK(cache.hits() > 0);
  CHECK(cache.fallbacks() == 0);
}

TEST_CASE("webdataset header cache notices a rewritten shard", "[webdataset]") {
  temp_dir dir("wds-rewrite");
  auto path = (dir.path() / "shard.tar").string();
  write_tar(path, around({{"000005.jpg", small_jpeg()}, {"000005.txt", "five"}}));
  overlord::sources::tar_index_cache cache;
  read_in_ranges(path, 1024, &cache);
  CHECK(cache.stores() == 1);

  // Other members at other offsets under the same path.
  write_tar(path, {{"a.png", small_png()}, {"a.txt", "first"},
                   {"b.png", small_png()}, {"b.txt", "second"}});
  auto whole = read_image_text_shard(path, "shard.tar",
                                     policy(bad_input_action::skip),
                                     small_images());
  auto cached = read_in_ranges(path, 1024, &cache);
  REQUIRE(cached.samples.size() == whole.samples.size());
  for (size_t i = 0; i < whole.samples.size(); ++i)
    CHECK(cached.samples[i].key == whole.samples[i].key);
  CHECK(cached.skipped.empty());
  CHECK(cache.stores() == 2);
}

TEST_CASE("webdataset header cache notices an in-place rewrite", "[webdataset]") {
  // Same size and modification time: only the change time differs between
  // the two versions. In the second, a member of key "a" comes back last.
  temp_dir dir("wds-in-place");
  auto path = (dir.path() / "shard.tar").string();
  auto other = (dir.path() / "other.tar").string();
  const member_list first = {{"a.png", small_png()}, {"a.txt", "first"},
                             {"b.png", small_png()}, {"b.txt", "second"},
                             {"c.dat", "extra"}};
  member_list second = first;
  second.back().first = "a.dat";
  write_tar(path, first);
  write_tar(other, second);
  REQUIRE(std::filesystem::file_size(path) == std::filesystem::file_size(other));

  overlord::sources::tar_index_cache cache;
  auto before = read_in_ranges(path, 1024, &cache);
  CHECK(before.samples.size() == 2);
  REQUIRE(cache.stores() == 1);

  const auto modified = std::filesystem::last_write_time(path);
  {
    std::ifstream in(other, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
    std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  std::filesystem::last_write_time(path, modified);

  auto whole = read_image_text_shard(path, "shard.tar",
                                     policy(bad_input_action::skip),
                                     small_images());
  REQUIRE(whole.samples.size() == 1);
  check_same_result(read_in_ranges(path, 1024, &cache), whole, true);
}

TEST_CASE("webdataset key split after many samples", "[webdataset]") {
  // Enough samples that the scanner's group list grows while the split
  // key's earlier group is still referenced.
  member_list members;
  for (int i = 0; i < 40; ++i) {
    const std::string key = "k" + std::to_string(100 + i);
    members.push_back({key + ".png", small_png()});
    members.push_back({key + ".txt", "caption " + key});
  }
  members.push_back({"k100.json", "{\"caption\": \"late\"}"});
  temp_dir dir("wds-split-growth");
  auto path = (dir.path() / "shard.tar").string();
  write_tar(path, members);
  auto result = read_image_text_shard(path, "shard.tar",
                                      policy(bad_input_action::skip),
                                      small_images());
  CHECK(result.samples.size() == 39);
  REQUIRE(result.skipped.size() == 1);
  CHECK(result.skipped[0].kind == "split_sample");
  CHECK(result.skipped[0].where == "shard.tar:k100.json");
  auto ranged = read_in_ranges(path, 2048);
  CHECK(ranged.samples.size() == 39);
  CHECK(kinds_of(ranged.skipped) == kinds_of(result.skipped));
}

TEST_CASE("webdataset recognises compressed shards", "[webdataset]") {
  temp_dir dir("wds-compressed");
  auto plain = (dir.path() / "plain.tar").string();
  write_tar(plain, {{"000001.png", small_png()}, {"000001.txt", "one"}});
  CHECK_FALSE(overlord::sources::compressed_shard(plain));
  const std::vector<std::pair<std::string, std::string>> starts = {
      {"shard.tar.gz", std::string("\x1f\x8b\x08\x00", 4)},
      {"shard.tar.bz2", "BZh91AY"},
      {"shard.tar.xz", std::string("\xfd" "7zXZ\x00\x00", 7)},
      {"shard.tar.zst", std::string("\x28\xb5\x2f\xfd\x00", 5)},
  };
  for (const auto& [name, start] : starts) {
    INFO(name);
    auto path = (dir.path() / name).string();
    std::ofstream(path, std::ios::binary) << start;
    CHECK(overlord::sources::compressed_shard(path));
  }
  CHECK_FALSE(overlord::sources::compressed_shard((dir.path() / "missing").string()));
}
