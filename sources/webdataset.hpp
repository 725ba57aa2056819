// Reader for image-text shards in the WebDataset layout: a tar file whose
// members are grouped into samples by key, the member name up to the first
// dot of its base name, folder included. A sample is one image
// (`KEY.jpg`, `KEY.jpeg` or `KEY.png`) and one caption (`KEY.txt`, the
// caption itself, or `KEY.json`, a JSON object with the caption in a
// string field). Members with other extensions are ignored.
//
// A read covers the whole shard or a byte range of it, and the outcome
// (which samples survive, what is reported, whether the shard is
// quarantined) is a function of the shard's bytes and the options only.
// The member bytes and decoded images of the range stay in memory until
// the call returns. Plain functions: callers own threads and logging.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sources/image.hpp"
#include "sources/reader.hpp"

namespace overlord::sources {

// Policy for a shard with bad samples.
enum class bad_input_action {
  skip,        // drop each bad sample, keep the rest
  quarantine,  // drop every sample of the shard
  fail,        // throw overlord::error(invalid_input) for the first one
};

class tar_index_cache;

struct webdataset_options {
  // `.json` captions: the string field holding the caption.
  std::string caption_field = "caption";
  bad_input_action on_bad_input = bad_input_action::skip;
  // Members larger than this are bad input and are not read.
  uint64_t max_member_bytes = 64ull << 20;
  // Byte range of this read: the samples whose first member's tar header
  // starts in [range_begin, range_end), and the problems that concern
  // them. Every read takes in the headers of the whole shard, so the checks
  // that need member names only (split, missing and duplicate members)
  // decide as a whole read does, but only the range's member data is read
  // and decoded. Reads of consecutive ranges together return what one
  // read of the whole shard returns, in the same order. Quarantine needs
  // the whole shard, so keep the full range with that policy.
  int64_t range_begin = 0;
  int64_t range_end = INT64_MAX;
  // Optional cache of tar headers. An earlier range read may have scanned
  // this uncompressed shard to its end, with every header read cleanly (no
  // warning, sparse map or hard link). A range read then takes the member
  // names, sizes and header positions from the cache instead of scanning
  // every header again, and reads only the range's members, with the same
  // result.
  tar_index_cache* index_cache = nullptr;
};

// The tar headers of recently read shards, keyed by path and checked
// against the file's device, inode, size, modification and change times.
// A range read of a large shard then costs its own members only, where a
// scan of 4,000 headers takes about 25 ms. Not thread-safe: give each
// reading thread its own cache.
class tar_index_cache {
 public:
  explicit tar_index_cache(size_t max_shards = 4);
  ~tar_index_cache();
  tar_index_cache(const tar_index_cache&) = delete;
  tar_index_cache& operator=(const tar_index_cache&) = delete;

  // Range reads that used an index, scans that stored one, and range reads
  // that scanned the shard after all because a member's header did not
  // read on its own.
  uint64_t hits() const;
  uint64_t stores() const;
  uint64_t fallbacks() const;

  struct impl;
  impl& state() { return *impl_; }

 private:
  std::unique_ptr<impl> impl_;
};

// One complete sample: both members were present, adjacent and readable.
struct webdataset_sample {
  std::string key;              // "<shard name>:<member key>"
  std::string image;            // the image member's bytes
  std::string image_extension;  // "jpg", "jpeg" or "png", lower case
  std::string image_member;     // member name, for messages
  std::string caption;
};

// Kinds of bad_record the reader reports:
//   missing_member   a key without an image or without a caption
//   split_sample     members of one key separated by another key's members
//   duplicate_member two images or two captions under one key
//   truncated_tar    the tar ends inside a member or header
//   corrupt_tar      the file is not a readable tar archive, or a header
//                    does not read (after a bad checksum the samples on
//                    both sides are dropped, and reading goes on at the
//                    next header when libarchive can)
//   bad_caption      a .json caption that is invalid or lacks the field
//   oversize         a member over max_member_bytes
//   unreadable_file  the shard cannot be opened
//   bad_image        (read_image_text_shard) the image does not decode
//   quarantined      one extra record when the policy drops the shard
// `where` is "<shard name>:<member name>" or "<shard name>@<byte offset>".
struct webdataset_result {
  std::vector<webdataset_sample> samples;
  std::vector<bad_record> skipped;
};

// Reads the shard at `path`; `shard_name` is the short name used in keys
// and messages. Applies options.on_bad_input to the problems found.
webdataset_result read_webdataset_shard(const std::string& path,
                                        const std::string& shard_name,
                                        const webdataset_options& options);

// A sample with its image decoded and preprocessed.
struct image_text_sample {
  std::string key;
  std::string caption;
  decoded_image image;
  // The image member's bytes and name, to decode the image again later
  // instead of keeping its pixels.
  std::string encoded_image;
  std::string image_member;
};

struct image_text_result {
  std::vector<image_text_sample> samples;
  std::vector<bad_record> skipped;
};

// read_webdataset_shard, then decode_image on every sample. An image that
// does not decode is bad input (kind bad_image) under the same policy, and
// it is decided after the whole shard was decoded.
image_text_result read_image_text_shard(const std::string& path,
                                        const std::string& shard_name,
                                        const webdataset_options& options,
                                        const image_options& image);

const char* to_string(bad_input_action action);

// Returns whether the file at `path` starts like a gzip, bzip2, xz, zstd
// or lz4 stream, whose tar header offsets are not file offsets.
bool compressed_shard(const std::string& path);

}  // namespace overlord::sources
