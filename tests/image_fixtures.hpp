// Builds image and tar fixtures at test run time: JPEG and PNG files
// encoded with libjpeg and libpng, and tar archives written with
// libarchive, so no binary fixture is committed.
#pragma once

#include <cstddef>
#include <cstdio>

#include <archive.h>
#include <archive_entry.h>
#include <jpeglib.h>
#include <png.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace overlord::testing {

// Interleaved RGB pixels of `height` x `width`, all of one colour.
inline std::vector<uint8_t> flat_rgb(uint32_t height, uint32_t width,
                                     uint8_t r, uint8_t g, uint8_t b) {
  std::vector<uint8_t> pixels;
  for (uint32_t i = 0; i < height * width; ++i) {
    pixels.push_back(r);
    pixels.push_back(g);
    pixels.push_back(b);
  }
  return pixels;
}

// Encodes 8-bit pixels (3 channels, or 1 when `gray`) as a PNG file.
inline std::string encode_png(const std::vector<uint8_t>& pixels,
                              uint32_t height, uint32_t width,
                              bool gray = false) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = width;
  image.height = height;
  image.format = gray ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, pixels.data(), 0,
                                 nullptr))
    throw std::runtime_error(std::string("PNG size: ") + image.message);
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(),
                                 0, nullptr))
    throw std::runtime_error(std::string("PNG write: ") + image.message);
  out.resize(size);
  return out;
}

// Encodes interleaved RGB pixels as a baseline JPEG file.
inline std::string encode_jpeg(const std::vector<uint8_t>& pixels,
                               uint32_t height, uint32_t width,
                               int quality = 95) {
  jpeg_compress_struct info;
  jpeg_error_mgr errors;
  info.err = jpeg_std_error(&errors);
  jpeg_create_compress(&info);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&info, &buffer, &size);
  info.image_width = width;
  info.image_height = height;
  info.input_components = 3;
  info.in_color_space = JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, TRUE);
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels.data()) +
                   static_cast<size_t>(info.next_scanline) * width * 3;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::string out(reinterpret_cast<char*>(buffer), size);
  std::free(buffer);
  return out;
}

// Writes a ustar archive with `members` (name, content) in order, or with
// `pax`, a POSIX pax archive, which takes names of any length. A name that
// ends in '/' is a directory entry.
inline void write_tar(const std::string& path,
                      const std::vector<std::pair<std::string, std::string>>& members,
                      bool pax = false) {
  archive* writer = archive_write_new();
  if (pax)
    archive_write_set_format_pax(writer);
  else
    archive_write_set_format_ustar(writer);
  if (archive_write_open_filename(writer, path.c_str()) != ARCHIVE_OK)
    throw std::runtime_error("cannot write " + path);
  for (const auto& [name, content] : members) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, name.c_str());
    const bool directory = !name.empty() && name.back() == '/';
    archive_entry_set_size(entry, static_cast<la_int64_t>(content.size()));
    archive_entry_set_filetype(entry, directory ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(entry, directory ? 0755 : 0644);
    archive_entry_set_mtime(entry, 0, 0);
    archive_write_header(writer, entry);
    archive_write_data(writer, content.data(), content.size());
    archive_entry_free(entry);
  }
  archive_write_close(writer);
  archive_write_free(writer);
}

}  // namespace overlord::testing
