// Image preprocessing for image-text sources: decodes a JPEG or PNG file
// and shrinks it to a pixel and patch budget with an area filter. Pixels
// stay 8-bit on the way to the trainer, a quarter of the bytes of float32;
// the client normalises them per channel (normalise_pixels in
// common/pixels.hpp). Plain functions without shared state, so any worker
// thread may call them.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace overlord::sources {

struct image_options {
  // Upper bound on height * width after resizing. Images are never
  // upscaled. The patch count is also kept at or below
  // max_pixels / (patch_size * patch_size), so that an image of any aspect
  // ratio takes a bounded number of sequence positions.
  uint64_t max_pixels = 224 * 224;
  uint32_t patch_size = 14;
  // Per channel (R, G, B), on the [0, 1] scale: the client turns a pixel
  // value v in 0..255 into (v / 255 - mean) / std.
  std::array<float, 3> mean = {0.5f, 0.5f, 0.5f};
  std::array<float, 3> std = {0.5f, 0.5f, 0.5f};
};

struct decoded_image {
  uint32_t height = 0;
  uint32_t width = 0;
  uint32_t channels = 0;  // always 3 (RGB); gray and alpha are converted
  uint32_t patches = 0;   // ceil(height / patch_size) * ceil(width / patch_size)
  std::vector<uint8_t> pixels;  // CHW, 0..255
  // How the trainer normalises each channel, from image_options.
  std::array<float, 3> mean = {0.5f, 0.5f, 0.5f};
  std::array<float, 3> std = {0.5f, 0.5f, 0.5f};
};

// Decoded images larger than this many pixels (before resizing) are
// rejected as bad input, so a small file cannot claim gigabytes of memory.
constexpr uint64_t max_source_pixels = uint64_t{1} << 26;

// Largest patch count decode_image can return for `options`.
uint32_t max_image_patches(const image_options& options);

// Returns ceil(height / patch_size) * ceil(width / patch_size).
uint32_t count_patches(uint32_t height, uint32_t width, uint32_t patch_size);

// Returns the size an image of `height` x `width` is resized to: the
// largest aspect-preserving scale <= 1 whose result fits both budgets of
// `options`. Each side stays at least 1 pixel.
std::pair<uint32_t, uint32_t> fit_size(uint32_t height, uint32_t width,
                                       const image_options& options);

// Resizes interleaved 8-bit RGB `pixels` (height x width) to out_height x
// out_width with an area (box) filter that weighs partly covered source
// pixels by their coverage. Returns interleaved float values on the
// 0..255 scale. Downscaling only.
std::vector<float> resize_area(const std::vector<uint8_t>& pixels,
                               uint32_t height, uint32_t width,
                               uint32_t out_height, uint32_t out_width);

// Decodes `bytes` (JPEG or PNG, recognised by their signature) and
// resizes them, rounding each filtered value to 8 bits. A JPEG much larger than the target is decoded at
// 1/2, 1/4 or 1/8 size by libjpeg first, then area-filtered to the size
// fit_size gives for its declared dimensions. Throws overlord::error(errc::invalid_input) with
// `where` (shard and member) in the message when the data is not a
// readable JPEG or PNG image or exceeds max_source_pixels.
decoded_image decode_image(const std::string& bytes, const std::string& where,
                           const image_options& options);

}  // namespace overlord::sources
