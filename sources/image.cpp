#include "sources/image.hpp"

// libjpeg's header needs size_t and FILE declared before it.
#include <cstddef>
#include <cstdio>

#include <jpeglib.h>
#include <png.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <memory>
#include <vector>

#include "common/error.hpp"

namespace overlord::sources {

namespace {

// Interleaved 8-bit RGB pixels straight from the decoder, and the size
// the file declares (larger when the decoder already scaled it down).
struct rgb_image {
  uint32_t height = 0;
  uint32_t width = 0;
  uint32_t source_height = 0;
  uint32_t source_width = 0;
  std::vector<uint8_t> pixels;
};

[[noreturn]] void reject(const std::string& where, const std::string& what) {
  throw error(errc::invalid_input, where + ": " + what);
}

void check_source_size(uint64_t height, uint64_t width,
                       const std::string& where) {
  if (height == 0 || width == 0)
    reject(where, "image has no pixels (" + std::to_string(width) + "x" +
                      std::to_string(height) + ")");
  if (height * width > max_source_pixels)
    reject(where, "image of " + std::to_string(width) + "x" +
                      std::to_string(height) + " pixels exceeds the limit of " +
                      std::to_string(max_source_pixels) +
                      " pixels; shrink it before packing the shard");
}

// libjpeg reports errors through a callback that must not return; it jumps
// back to decode_jpeg, which cleans up and throws.
struct jpeg_failure {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {};
  char warning[JMSG_LENGTH_MAX] = {};
};

void on_jpeg_error(j_common_ptr info) {
  auto* failure = reinterpret_cast<jpeg_failure*>(info->err);
  (*info->err->format_message)(info, failure->message);
  std::longjmp(failure->jump, 1);
}

// Level -1 is a warning about corrupt data (libjpeg then fills in gray
// and goes on); keep the first one. Trace messages are dropped.
void on_jpeg_message(j_common_ptr info, int level) {
  auto* failure = reinterpret_cast<jpeg_failure*>(info->err);
  if (level >= 0)
    return;
  if (info->err->num_warnings++ == 0)
    (*info->err->format_message)(info, failure->warning);
}

// Returns the largest power-of-two reduction (at most 8, libjpeg's
// limit) after which an image of `height` x `width` still covers the
// target size, so the area filter has at least one source pixel per
// output pixel.
unsigned jpeg_scale_denominator(uint32_t height, uint32_t width,
                                std::pair<uint32_t, uint32_t> target) {
  unsigned denominator = 1;
  while (denominator < 8) {
    const unsigned next = denominator * 2;
    if ((height + next - 1) / next < target.first ||
        (width + next - 1) / next < target.second)
      break;
    denominator = next;
  }
  return denominator;
}

void decode_jpeg(const std::string& bytes, const std::string& where,
                 const image_options& options, rgb_image& out) {
  jpeg_decompress_struct info;
  jpeg_failure failure;
  info.err = jpeg_std_error(&failure.manager);
  failure.manager.error_exit = on_jpeg_error;
  failure.manager.emit_message = on_jpeg_message;
  if (setjmp(failure.jump)) {
    jpeg_destroy_decompress(&info);
    reject(where, std::string("invalid JPEG: ") + failure.message);
  }

  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  if (info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&info);
    reject(where, "CMYK JPEG images are not supported; convert to RGB");
  }
  try {
    check_source_size(info.image_height, info.image_width, where);
  } catch (...) {
    jpeg_destroy_decompress(&info);
    throw;
  }
  out.source_height = info.image_height;
  out.source_width = info.image_width;
  // libjpeg-turbo can decode at 1/2, 1/4 or 1/8 size in the DCT domain,
  // which saves most of the work when the image is shrunk a lot anyway.
  info.scale_num = 1;
  info.scale_denom = jpeg_scale_denominator(
      info.image_height, info.image_width,
      fit_size(info.image_height, info.image_width, options));
  info.out_color_space = JCS_RGB;
  jpeg_start_decompress(&info);
  try {
    out.height = info.output_height;
    out.width = info.output_width;
    out.pixels.resize(static_cast<size_t>(out.height) * out.width * 3);
  } catch (...) {
    jpeg_destroy_decompress(&info);
    throw;
  }
  const size_t stride = static_cast<size_t>(out.width) * 3;
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = out.pixels.data() + info.output_scanline * stride;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  const bool corrupt = failure.manager.num_warnings > 0;
  jpeg_destroy_decompress(&info);
  // A warning means damaged data that libjpeg papered over with gray;
  // such an image would silently differ from what the shard's author saw.
  if (corrupt)
    reject(where, std::string("corrupt JPEG data: ") + failure.warning);
}

void decode_png(const std::string& bytes, const std::string& where,
                rgb_image& out) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size())) {
    std::string message = image.message;
    png_image_free(&image);
    reject(where, "invalid PNG: " + message);
  }
  try {
    check_source_size(image.height, image.width, where);
  } catch (...) {
    png_image_free(&image);
    throw;
  }
  // libpng converts gray, palette and 16-bit images to 8-bit RGB and
  // composites transparent pixels onto this background.
  image.format = PNG_FORMAT_RGB;
  const png_color white = {255, 255, 255};
  out.height = out.source_height = image.height;
  out.width = out.source_width = image.width;
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, &white, out.pixels.data(), 0, nullptr)) {
    std::string message = image.message;
    png_image_free(&image);
    reject(where, "invalid PNG: " + message);
  }
}

bool starts_with(const std::string& bytes, const unsigned char* signature,
                 size_t size) {
  return bytes.size() >= size && std::memcmp(bytes.data(), signature, size) == 0;
}

// Taps of an area filter along one axis. Output pixel `o` averages the
// `count[o]` source pixels listed from `first_tap[o]` on, each by its coverage.
struct area_taps {
  std::vector<uint32_t> first_tap;
  std::vector<uint32_t> count;
  std::vector<uint32_t> index;
  std::vector<float> weight;
};

area_taps make_area_taps(uint32_t in, uint32_t out) {
  area_taps taps;
  taps.first_tap.resize(out);
  taps.count.resize(out);
  const double scale = static_cast<double>(in) / out;
  for (uint32_t o = 0; o < out; ++o) {
    taps.first_tap[o] = static_cast<uint32_t>(taps.index.size());
    const double start = o * scale;
    const double end = std::min<double>((o + 1) * scale, in);
    for (auto j = static_cast<uint32_t>(start); j < in && j < end; ++j) {
      double overlap = std::min<double>(end, j + 1.0) - std::max<double>(start, j);
      if (overlap > 0) {
        taps.index.push_back(j);
        taps.weight.push_back(static_cast<float>(overlap / scale));
      }
    }
    taps.count[o] = static_cast<uint32_t>(taps.index.size()) - taps.first_tap[o];
  }
  return taps;
}

// Rounds a filtered value to 8 bits, half away from zero as std::lround
// does. For a float in 0..255, adding 0.5 in double is exact, so
// truncating the sum gives the same result without a call into libm.
inline uint8_t round_to_byte(float value) {
  const float clamped = std::clamp(value, 0.0f, 255.0f);
  return static_cast<uint8_t>(static_cast<int>(static_cast<double>(clamped) + 0.5));
}

// Rounds every third value of `row`, `count` of them, into `target`.
void round_channel(const float* __restrict row, uint32_t count,
                   uint8_t* __restrict target) {
  for (uint32_t x = 0; x < count; ++x)
    target[x] = round_to_byte(row[x * 3]);
}

}  // namespace

uint32_t max_image_patches(const image_options& options) {
  const uint64_t area = static_cast<uint64_t>(options.patch_size) *
                        options.patch_size;
  const uint64_t limit = area == 0 ? 0 : options.max_pixels / area;
  return static_cast<uint32_t>(std::clamp<uint64_t>(limit, 1, UINT32_MAX));
}

uint32_t count_patches(uint32_t height, uint32_t width, uint32_t patch_size) {
  const uint64_t rows = (static_cast<uint64_t>(height) + patch_size - 1) / patch_size;
  const uint64_t columns = (static_cast<uint64_t>(width) + patch_size - 1) / patch_size;
  return static_cast<uint32_t>(std::min<uint64_t>(rows * columns, UINT32_MAX));
}

std::pair<uint32_t, uint32_t> fit_size(uint32_t height, uint32_t width,
                                       const image_options& options) {
  const uint32_t patch_limit = max_image_patches(options);
  auto size_at = [&](double scale) {
    auto h = static_cast<uint32_t>(std::max(1.0, std::floor(height * scale)));
    auto w = static_cast<uint32_t>(std::max(1.0, std::floor(width * scale)));
    return std::make_pair(std::min(h, height), std::min(w, width));
  };
  auto fits = [&](std::pair<uint32_t, uint32_t> size) {
    return static_cast<uint64_t>(size.first) * size.second <= options.max_pixels &&
           count_patches(size.first, size.second, options.patch_size) <=
               patch_limit;
  };

  const double area = static_cast<double>(height) * width;
  double high = std::min(1.0, std::sqrt(options.max_pixels / area));
  if (fits(size_at(high)))
    return size_at(high);
  // Both budgets shrink monotonically with the scale, so a bisection finds
  // the largest scale that fits. 1x1 (scale 0) always fits.
  double low = 0;
  for (int i = 0; i < 64; ++i) {
    double middle = (low + high) / 2;
    if (fits(size_at(middle)))
      low = middle;
    else
      high = middle;
  }
  return size_at(low);
}

namespace {

// filter_row filters one interleaved RGB row of `in_width` pixels
// horizontally into out_width x 3 sums. Each sum adds its taps in order
// from zero, so every call gives the same bits.
#if defined(__SSE2__)
// Returns the pixel at `pixel` as four floats (red, green, blue and one
// more). The last pixel of a row is read without the byte after it.
inline __m128 load_pixel(const uint8_t* pixel, bool last) {
  uint32_t packed;
  if (last)
    packed = pixel[0] | (pixel[1] << 8) | (pixel[2] << 16);
  else
    std::memcpy(&packed, pixel, sizeof packed);
  const __m128i zero = _mm_setzero_si128();
  __m128i wide = _mm_cvtsi32_si128(static_cast<int>(packed));
  wide = _mm_unpacklo_epi16(_mm_unpacklo_epi8(wide, zero), zero);
  return _mm_cvtepi32_ps(wide);
}

// The three channels of a pixel share one vector. Each lane multiplies and
// adds in the order of the scalar loop below, so the sums are the same bits.
void filter_row(const uint8_t* in, uint32_t in_width, const area_taps& columns,
                uint32_t out_width, float* out) {
  for (uint32_t x = 0; x < out_width; ++x) {
    const uint32_t* index = columns.index.data() + columns.first_tap[x];
    const float* weight = columns.weight.data() + columns.first_tap[x];
    __m128 sum = _mm_setzero_ps();
    for (uint32_t t = 0; t < columns.count[x]; ++t) {
      const __m128 pixel = load_pixel(in + static_cast<size_t>(index[t]) * 3,
                                      index[t] + 1 == in_width);
      sum = _mm_add_ps(sum, _mm_mul_ps(_mm_set1_ps(weight[t]), pixel));
    }
    // The fourth lane would land on the next pixel's red, which is written
    // next, or past the row after its last pixel.
    if (x + 1 < out_width) {
      _mm_storeu_ps(out + x * 3, sum);
    } else {
      float lanes[4];
      _mm_storeu_ps(lanes, sum);
      std::memcpy(out + x * 3, lanes, 3 * sizeof(float));
    }
  }
}
#else
void filter_row(const uint8_t* in, uint32_t /*in_width*/,
                const area_taps& columns, uint32_t out_width, float* out) {
  for (uint32_t x = 0; x < out_width; ++x) {
    const uint32_t* index = columns.index.data() + columns.first_tap[x];
    const float* weight = columns.weight.data() + columns.first_tap[x];
    float red = 0.0f, green = 0.0f, blue = 0.0f;
    for (uint32_t t = 0; t < columns.count[x]; ++t) {
      const uint8_t* pixel = in + static_cast<size_t>(index[t]) * 3;
      red += weight[t] * pixel[0];
      green += weight[t] * pixel[1];
      blue += weight[t] * pixel[2];
    }
    out[x * 3] = red;
    out[x * 3 + 1] = green;
    out[x * 3 + 2] = blue;
  }
}
#endif

// Adds weight * row[i] to sum[i]. The pointers never alias, which lets
// the compiler vectorize the loop without changing any sum.
void add_weighted(float* __restrict sum, const float* __restrict row,
                  float weight, size_t count) {
  for (size_t i = 0; i < count; ++i)
    sum[i] += weight * row[i];
}

// Area-filters interleaved RGB `pixels` and passes each output row
// (out_width x 3 floats) to `emit(y, row)`. A small ring keeps the
// horizontally filtered source rows that successive output rows share.
template <class Emit>
void resize_area_rows(const uint8_t* pixels, uint32_t height, uint32_t width,
                      uint32_t out_height, uint32_t out_width, Emit&& emit) {
  const auto columns = make_area_taps(width, out_width);
  const auto rows = make_area_taps(height, out_height);
  uint32_t max_taps = 1;
  for (uint32_t y = 0; y < out_height; ++y)
    max_taps = std::max(max_taps, rows.count[y]);

  const size_t stride = static_cast<size_t>(out_width) * 3;
  const size_t slots = max_taps + 1;
  std::unique_ptr<float[]> ring(new float[slots * stride]);
  std::vector<int64_t> held(slots, -1);  // source row in each slot
  std::unique_ptr<float[]> sum(new float[stride]);

  for (uint32_t y = 0; y < out_height; ++y) {
    std::fill(sum.get(), sum.get() + stride, 0.0f);
    for (uint32_t t = rows.first_tap[y]; t < rows.first_tap[y] + rows.count[y];
         ++t) {
      const uint32_t source_row = rows.index[t];
      const size_t slot = source_row % slots;
      float* filtered = ring.get() + slot * stride;
      if (held[slot] != source_row) {
        filter_row(pixels + static_cast<size_t>(source_row) * width * 3, width,
                   columns, out_width, filtered);
        held[slot] = source_row;
      }
      add_weighted(sum.get(), filtered, rows.weight[t], stride);
    }
    emit(y, sum.get());
  }
}

}  // namespace

std::vector<float> resize_area(const std::vector<uint8_t>& pixels,
                               uint32_t height, uint32_t width,
                               uint32_t out_height, uint32_t out_width) {
  const size_t stride = static_cast<size_t>(out_width) * 3;
  std::vector<float> out(out_height * stride);
  resize_area_rows(pixels.data(), height, width, out_height, out_width,
                   [&](uint32_t y, const float* row) {
                     std::copy(row, row + stride, out.data() + y * stride);
                   });
  return out;
}

decoded_image decode_image(const std::string& bytes, const std::string& where,
                           const image_options& options) {
  static const unsigned char jpeg_signature[] = {0xFF, 0xD8, 0xFF};
  static const unsigned char png_signature[] = {0x89, 'P', 'N', 'G',
                                                0x0D, 0x0A, 0x1A, 0x0A};
  if (options.patch_size == 0 || options.max_pixels == 0)
    throw error(errc::invalid_config,
                "image options need patch_size >= 1 and max_pixels >= 1");
  for (int c = 0; c < 3; ++c)
    if (!(options.std[c] > 0))
      throw error(errc::invalid_config, "image std values must be > 0");

  rgb_image source;
  if (starts_with(bytes, jpeg_signature, sizeof(jpeg_signature)))
    decode_jpeg(bytes, where, options, source);
  else if (starts_with(bytes, png_signature, sizeof(png_signature)))
    decode_png(bytes, where, source);
  else
    reject(where, "not a JPEG or PNG file (" + std::to_string(bytes.size()) +
                      " bytes with an unknown signature)");

  // The size depends on the declared size only, not on how far the
  // decoder already reduced the image.
  // Plain variables, because a C++17 lambda cannot capture a structured binding.
  const auto fitted = fit_size(source.source_height, source.source_width, options);
  const uint32_t height = fitted.first;
  const uint32_t width = fitted.second;

  decoded_image out;
  out.height = height;
  out.width = width;
  out.channels = 3;
  out.patches = count_patches(height, width, options.patch_size);
  out.mean = options.mean;
  out.std = options.std;
  const size_t plane = static_cast<size_t>(height) * width;
  out.pixels.resize(plane * 3);
  // Interleaved RGB to channel planes, through the area filter when the
  // size changes.
  if (height == source.height && width == source.width) {
    for (int c = 0; c < 3; ++c) {
      uint8_t* target = out.pixels.data() + c * plane;
      for (size_t i = 0; i < plane; ++i)
        target[i] = source.pixels[i * 3 + c];
    }
  } else {
    // Each output row goes straight to the channel planes, so the float
    // image is never held whole.
    resize_area_rows(source.pixels.data(), source.height, source.width, height,
                     width, [&](uint32_t y, const float* row) {
                       const size_t offset = static_cast<size_t>(y) * width;
                       for (int c = 0; c < 3; ++c)
                         round_channel(row + c, width,
                                       out.pixels.data() + c * plane + offset);
                     });
  }
  return out;
}

}  // namespace overlord::sources
