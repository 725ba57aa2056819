#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "common/error.hpp"
#include "sources/image.hpp"
#include "tests/image_fixtures.hpp"

using overlord::errc;
using overlord::error;
using overlord::sources::count_patches;
using overlord::sources::decode_image;
using overlord::sources::fit_size;
using overlord::sources::image_options;
using overlord::sources::max_image_patches;
using overlord::sources::resize_area;
using overlord::testing::encode_jpeg;
using overlord::testing::encode_png;
using overlord::testing::flat_rgb;

namespace {

// Options that keep pixel values on the 0..1 scale and never resize.
image_options identity_options() {
  image_options options;
  options.max_pixels = 1 << 20;
  options.patch_size = 2;
  options.mean = {0, 0, 0};
  options.std = {1, 1, 1};
  return options;
}

}  // namespace

TEST_CASE("PNG decode keeps pixels in CHW order", "[image]") {
  // 2 rows x 3 columns with distinct values per channel.
  std::vector<uint8_t> pixels;
  for (int i = 0; i < 6; ++i) {
    pixels.push_back(static_cast<uint8_t>(10 * i));
    pixels.push_back(static_cast<uint8_t>(100 + i));
    pixels.push_back(static_cast<uint8_t>(250 - i));
  }
  auto image = decode_image(encode_png(pixels, 2, 3), "t.tar:0.png",
                            identity_options());
  REQUIRE(image.height == 2);
  REQUIRE(image.width == 3);
  REQUIRE(image.channels == 3);
  REQUIRE(image.pixels.size() == 18);
  CHECK(image.patches == 2);  // ceil(2/2) * ceil(3/2)
  for (int i = 0; i < 6; ++i) {
    CHECK(image.pixels[i] == 10 * i);
    CHECK(image.pixels[6 + i] == 100 + i);
    CHECK(image.pixels[12 + i] == 250 - i);
  }
}

TEST_CASE("gray PNG decodes to three equal channels", "[image]") {
  std::vector<uint8_t> gray = {0, 51, 102, 255};
  auto image = decode_image(encode_png(gray, 2, 2, true), "t.tar:g.png",
                            identity_options());
  REQUIRE(image.channels == 3);
  for (int i = 0; i < 4; ++i) {
    CHECK(image.pixels[i] == gray[i]);
    CHECK(image.pixels[4 + i] == gray[i]);
    CHECK(image.pixels[8 + i] == gray[i]);
  }
}

TEST_CASE("JPEG decode of a flat colour", "[image]") {
  auto image = decode_image(encode_jpeg(flat_rgb(8, 16, 200, 100, 50), 8, 16),
                            "t.tar:0.jpg", identity_options());
  REQUIRE(image.height == 8);
  REQUIRE(image.width == 16);
  REQUIRE(image.pixels.size() == 3 * 8 * 16);
  CHECK(image.patches == 32);
  // JPEG is lossy; a flat block comes back within a few levels.
  for (size_t i = 0; i < 128; ++i) {
    CHECK(std::abs(image.pixels[i] - 200) <= 3);
    CHECK(std::abs(image.pixels[128 + i] - 100) <= 3);
    CHECK(std::abs(image.pixels[256 + i] - 50) <= 3);
  }
}

TEST_CASE("decode keeps 8-bit pixels and carries mean and std", "[image]") {
  image_options options = identity_options();
  options.mean = {0.5f, 0.25f, 0.0f};
  options.std = {0.5f, 0.25f, 2.0f};
  auto image = decode_image(encode_png(flat_rgb(1, 1, 255, 0, 51), 1, 1),
                            "t.tar:n.png", options);
  REQUIRE(image.pixels.size() == 3);
  CHECK(image.pixels[0] == 255);
  CHECK(image.pixels[1] == 0);
  CHECK(image.pixels[2] == 51);
  CHECK(image.mean == options.mean);
  CHECK(image.std == options.std);
}

TEST_CASE("resize rounds filtered values to 8 bits", "[image]") {
  // One row of two pixels, 100 and 101 in every channel, averaged into
  // one pixel of 100.5, which rounds away from zero.
  std::vector<uint8_t> row = {100, 100, 100, 101, 101, 101};
  image_options options = identity_options();
  options.max_pixels = 1;
  options.patch_size = 1;
  auto image = decode_image(encode_png(row, 1, 2), "t.tar:r.png", options);
  REQUIRE(image.pixels.size() == 3);
  CHECK(image.pixels[0] == 101);
}

TEST_CASE("patch count rounds each side up", "[image]") {
  CHECK(count_patches(224, 224, 14) == 256);
  CHECK(count_patches(225, 224, 14) == 17 * 16);
  CHECK(count_patches(1, 1, 14) == 1);
  CHECK(count_patches(14, 15, 14) == 2);
}

TEST_CASE("fit_size keeps aspect ratio within max_pixels", "[image]") {
  image_options options;
  options.max_pixels = 20000;
  options.patch_size = 10;
  auto [height, width] = fit_size(1000, 500, options);
  CHECK(static_cast<uint64_t>(height) * width <= 20000);
  CHECK(std::abs(static_cast<double>(height) / width - 2.0) < 0.02);
  // Close to the budget, not far below it.
  CHECK(static_cast<uint64_t>(height) * width > 19000);
  CHECK(count_patches(height, width, 10) <= max_image_patches(options));
}

TEST_CASE("fit_size never upscales", "[image]") {
  image_options options;
  options.max_pixels = 1 << 20;
  options.patch_size = 14;
  auto size = fit_size(10, 30, options);
  CHECK(size.first == 10);
  CHECK(size.second == 30);
}

TEST_CASE("fit_size bounds patches of a thin image", "[image]") {
  image_options options;
  options.max_pixels = 224 * 224;
  options.patch_size = 14;
  // 2 x 20000 has few pixels but 1429 patches of 14 x 14.
  auto [height, width] = fit_size(2, 20000, options);
  CHECK(count_patches(height, width, 14) <= 256);
  CHECK(height >= 1);
  CHECK(width >= 14 * 200);  // shrunk no more than needed
}

TEST_CASE("area filter averages covered pixels", "[image]") {
  // 2 x 2 to 1 x 1: the mean of four pixels.
  std::vector<uint8_t> square = {0, 0, 0, 100, 100, 100,
                                 200, 200, 200, 100, 100, 100};
  auto one = resize_area(square, 2, 2, 1, 1);
  REQUIRE(one.size() == 3);
  CHECK(one[0] == Approx(100));

  // One row of 3 to 2: each output pixel covers 1.5 source pixels.
  std::vector<uint8_t> row = {0, 0, 0, 90, 90, 90, 180, 180, 180};
  auto two = resize_area(row, 1, 3, 1, 2);
  REQUIRE(two.size() == 6);
  CHECK(two[0] == Approx(30));
  CHECK(two[3] == Approx(150));
}

// Returns height x width interleaved RGB pixels of reproducible noise.
std::vector<uint8_t> noisy_rgb(uint32_t height, uint32_t width, uint32_t seed) {
  std::vector<uint8_t> pixels(static_cast<size_t>(height) * width * 3);
  uint32_t state = seed;
  for (auto& value : pixels) {
    state = state * 1664525u + 1013904223u;  // a linear congruential generator
    value = static_cast<uint8_t>(state >> 24);
  }
  return pixels;
}

// The area filter of whole images, pass by pass: the definition that the
// row-by-row filter of sources/image.cpp must match bit for bit.
std::vector<float> two_pass_area(const std::vector<uint8_t>& pixels,
                                 uint32_t height, uint32_t width,
                                 uint32_t out_height, uint32_t out_width) {
  // Taps of one axis: (source index, weight) per output index.
  auto taps = [](uint32_t in, uint32_t out) {
    std::vector<std::vector<std::pair<uint32_t, float>>> all(out);
    const double scale = static_cast<double>(in) / out;
    for (uint32_t o = 0; o < out; ++o) {
      const double start = o * scale;
      const double end = std::min<double>((o + 1) * scale, in);
      for (auto j = static_cast<uint32_t>(start); j < in && j < end; ++j) {
        double overlap = std::min<double>(end, j + 1.0) - std::max<double>(start, j);
        if (overlap > 0)
          all[o].emplace_back(j, static_cast<float>(overlap / scale));
      }
    }
    return all;
  };
  const auto columns = taps(width, out_width);
  const auto rows = taps(height, out_height);
  std::vector<float> wide(static_cast<size_t>(height) * out_width * 3);
  for (uint32_t y = 0; y < height; ++y)
    for (uint32_t x = 0; x < out_width; ++x)
      for (int c = 0; c < 3; ++c) {
        float sum = 0.0f;
        for (const auto& [index, weight] : columns[x])
          sum += weight * pixels[(static_cast<size_t>(y) * width + index) * 3 + c];
        wide[(static_cast<size_t>(y) * out_width + x) * 3 + c] = sum;
      }
  std::vector<float> out(static_cast<size_t>(out_height) * out_width * 3, 0.0f);
  for (uint32_t y = 0; y < out_height; ++y)
    for (const auto& [index, weight] : rows[y])
      for (size_t i = 0; i < static_cast<size_t>(out_width) * 3; ++i)
        out[y * out_width * 3 + i] += weight * wide[index * out_width * 3 + i];
  return out;
}

TEST_CASE("area filter matches two-pass reference", "[image]") {
  // Sizes with ratios below and above 2, exact multiples, a single row
  // and a single column, over noisy pixels.
  const std::vector<std::array<uint32_t, 4>> cases = {
      {97, 131, 40, 55}, {64, 64, 32, 32}, {300, 200, 211, 141},
      {1, 50, 1, 7},     {50, 1, 7, 1},    {33, 77, 32, 76},
      {480, 640, 89, 119},
  };
  uint32_t seed = 12345;
  for (const auto& [height, width, out_height, out_width] : cases) {
    auto pixels = noisy_rgb(height, width, seed++);
    auto got = resize_area(pixels, height, width, out_height, out_width);
    auto expected = two_pass_area(pixels, height, width, out_height, out_width);
    INFO(height << "x" << width << " to " << out_height << "x" << out_width);
    REQUIRE(got.size() == expected.size());
    size_t different = 0;
    for (size_t i = 0; i < got.size(); ++i)
      different += std::memcmp(&got[i], &expected[i], sizeof(float)) != 0;
    CHECK(different == 0);
  }
}

TEST_CASE("decode_image planes match area filter", "[image]") {
  // A lossless noisy PNG, shrunk: every plane value must be the filter's
  // value at that position, rounded half away from zero.
  const uint32_t height = 61, width = 97;
  auto pixels = noisy_rgb(height, width, 777);
  image_options options = identity_options();
  options.max_pixels = 1500;
  options.patch_size = 1;
  auto image = decode_image(encode_png(pixels, height, width), "t.tar:noise.png",
                            options);
  REQUIRE(image.height < height);
  REQUIRE(image.width < width);

  auto filtered = resize_area(pixels, height, width, image.height, image.width);
  const size_t plane = static_cast<size_t>(image.height) * image.width;
  REQUIRE(image.pixels.size() == plane * 3);
  size_t different = 0;
  for (size_t i = 0; i < plane; ++i)
    for (size_t c = 0; c < 3; ++c) {
      const float value = std::clamp(filtered[i * 3 + c], 0.0f, 255.0f);
      different += image.pixels[c * plane + i] != std::lround(value);
    }
  CHECK(different == 0);
}

TEST_CASE("decode_image resizes large images", "[image]") {
  image_options options = identity_options();
  options.max_pixels = 4096;
  options.patch_size = 4;
  auto image = decode_image(encode_png(flat_rgb(256, 128, 10, 20, 30), 256, 128),
                            "t.tar:big.png", options);
  CHECK(static_cast<uint64_t>(image.height) * image.width <= 4096);
  CHECK(image.patches <= 256);
  CHECK(image.width >= 40);
  // Each side is rounded down on its own, so the ratio may be off by one.
  CHECK(std::abs(static_cast<int>(image.height) -
                 2 * static_cast<int>(image.width)) <= 1);
  CHECK(image.patches == count_patches(image.height, image.width, 4));
  CHECK(image.pixels.size() == 3u * image.height * image.width);
  CHECK(image.pixels[0] == 10);
}

TEST_CASE("invalid images throw with where", "[image]") {
  auto jpeg = encode_jpeg(flat_rgb(32, 32, 1, 2, 3), 32, 32);
  auto png = encode_png(flat_rgb(32, 32, 1, 2, 3), 32, 32);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"garbage", "this is not an image"},
      {"empty", ""},
      {"truncated jpeg", jpeg.substr(0, jpeg.size() / 2)},
      {"truncated png", png.substr(0, png.size() / 2)},
  };
  for (const auto& [name, bytes] : cases) {
    INFO(name);
    try {
      decode_image(bytes, "shard-7.tar:000042.jpg", identity_options());
      FAIL("no exception");
    } catch (const error& e) {
      CHECK(e.code() == errc::invalid_input);
      CHECK(std::string(e.what()).rfind("shard-7.tar:000042.jpg: ", 0) == 0);
    }
  }
}
