#include "sources/webdataset.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "common/error.hpp"

namespace overlord::sources {

namespace {

// One tar entry as a scan found it.
struct tar_member {
  int64_t offset = 0;  // header position: the entry's first block
  std::string name;
  int64_t size = 0;
  bool regular = false;
};

// The entries of a shard whose headers all read cleanly to its end.
struct tar_index {
  std::vector<tar_member> members;
};

// Identity of a shard's contents for the cache. The change time moves on
// every write, even one that restores the modification time.
struct file_identity {
  dev_t device = 0;
  ino_t inode = 0;
  off_t size = 0;
  int64_t modified_ns = 0;
  int64_t changed_ns = 0;

  bool operator==(const file_identity& other) const {
    return device == other.device && inode == other.inode &&
           size == other.size && modified_ns == other.modified_ns &&
           changed_ns == other.changed_ns;
  }
};

std::optional<file_identity> identity_of(const struct stat& info) {
  if (!S_ISREG(info.st_mode))
    return std::nullopt;
  file_identity id;
  id.device = info.st_dev;
  id.inode = info.st_ino;
  id.size = info.st_size;
  id.modified_ns = int64_t{info.st_mtim.tv_sec} * 1000000000 + info.st_mtim.tv_nsec;
  id.changed_ns = int64_t{info.st_ctim.tv_sec} * 1000000000 + info.st_ctim.tv_nsec;
  return id;
}

// A file opened for reading, closed when it goes out of scope.
class open_file {
 public:
  explicit open_file(const std::string& path)
      : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~open_file() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  open_file(const open_file&) = delete;
  open_file& operator=(const open_file&) = delete;

  int fd() const { return fd_; }

  std::optional<file_identity> identity() const {
    struct stat info {};
    if (fd_ < 0 || ::fstat(fd_, &info) != 0)
      return std::nullopt;
    return identity_of(info);
  }

 private:
  int fd_;
};

std::optional<file_identity> identity_of_path(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0)
    return std::nullopt;
  return identity_of(info);
}

}  // namespace

struct tar_index_cache::impl {
  struct entry {
    std::string path;
    file_identity identity;
    // Null once a member's header did not read on its own: the shard is
    // then scanned on every read and not stored again.
    std::shared_ptr<const tar_index> index;
  };
  size_t max_shards = 4;
  std::list<entry> entries;  // most recently used first
  uint64_t hits = 0;
  uint64_t stores = 0;
  uint64_t fallbacks = 0;

  // Returns the entry of `path` when it still has `identity`, else null.
  entry* find(const std::string& path, const file_identity& identity) {
    for (auto it = entries.begin(); it != entries.end(); ++it) {
      if (it->path != path)
        continue;
      if (!(it->identity == identity)) {
        entries.erase(it);
        return nullptr;
      }
      entries.splice(entries.begin(), entries, it);
      return &entries.front();
    }
    return nullptr;
  }

  void store(const std::string& path, const file_identity& identity,
             std::shared_ptr<const tar_index> index) {
    entries.remove_if([&](const entry& e) { return e.path == path; });
    entries.push_front({path, identity, std::move(index)});
    while (entries.size() > max_shards)
      entries.pop_back();
    stores++;
  }
};

tar_index_cache::tar_index_cache(size_t max_shards)
    : impl_(std::make_unique<impl>()) {
  impl_->max_shards = std::max<size_t>(1, max_shards);
}

tar_index_cache::~tar_index_cache() = default;

uint64_t tar_index_cache::hits() const { return impl_->hits; }

uint64_t tar_index_cache::stores() const { return impl_->stores; }

uint64_t tar_index_cache::fallbacks() const { return impl_->fallbacks; }

namespace {

// The members of one key as the scan found them.
struct member_group {
  std::string key;
  webdataset_sample sample;
  int64_t first_offset = 0;  // header position of the first member
  bool has_image = false;
  bool has_caption = false;
  bool bad = false;
  std::vector<std::string> members;
};

// A problem with the offset that decides which read reports it: the
// first member's offset of the sample it concerns, or for a problem of
// the archive itself, that of the last sample begun before it.
struct owned_problem {
  bad_record record;
  int64_t owner_offset = 0;
};

struct shard_scan {
  std::vector<member_group> groups;     // in order of first appearance
  std::vector<owned_problem> problems;  // in order of detection
};

enum class member_role { image, text_caption, json_caption, other };

member_role role_of(std::string extension) {
  for (auto& c : extension)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (extension == "jpg" || extension == "jpeg" || extension == "png")
    return member_role::image;
  if (extension == "txt")
    return member_role::text_caption;
  if (extension == "json")
    return member_role::json_caption;
  return member_role::other;
}

std::string lower(std::string text) {
  for (auto& c : text)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// Returns whether a header read with `status` gives `entry` on its own:
// read without a warning or a retry, no sparse map and no hard link.
bool plain_entry(int status, archive_entry* entry) {
  return status == ARCHIVE_OK && archive_entry_sparse_count(entry) == 0 &&
         archive_entry_hardlink(entry) == nullptr;
}

// Reading and skipping the data of the member a scan is at.
class member_access {
 public:
  virtual ~member_access() = default;
  // Returns false when the archive cannot be read any further.
  virtual bool skip() = 0;
  // As archive_read_data: bytes read, 0 at the member's end, or < 0.
  virtual la_ssize_t read(void* buffer, size_t size) = 0;
  virtual std::string error() const = 0;
};

std::string error_text(archive* reader) {
  const char* text = archive_error_string(reader);
  return text ? text : "unknown libarchive error";
}

// The member at the position of a reader that scans the whole archive.
class streamed_member : public member_access {
 public:
  explicit streamed_member(archive* reader) : reader_(reader) {}
  bool skip() override { return archive_read_data_skip(reader_) >= ARCHIVE_WARN; }
  la_ssize_t read(void* buffer, size_t size) override {
    return archive_read_data(reader_, buffer, size);
  }
  std::string error() const override { return error_text(reader_); }

 private:
  archive* reader_;
};

// A member found through an index. A tar reader that starts at its header
// opens on the first read only, and skipping costs nothing.
class indexed_member : public member_access {
 public:
  indexed_member(int fd, const tar_member& member, std::vector<char>& buffer)
      : fd_(fd), member_(member), buffer_(buffer), position_(member.offset) {}

  bool skip() override { return true; }

  la_ssize_t read(void* buffer, size_t size) override {
    if (!reader_ && !open())
      return ARCHIVE_FATAL;
    return archive_read_data(reader_.get(), buffer, size);
  }

  std::string error() const override {
    return reader_ ? error_text(reader_.get()) : open_error_;
  }

  // Whether a tar reader could not start at the member's header as the
  // index expects: then only a scan from the start gives the right result.
  bool mismatched() const { return mismatched_; }

 private:
  bool open() {
    reader_.reset(archive_read_new());
    archive_read_support_format_tar(reader_.get());
    archive_entry* entry = nullptr;
    const char* name = nullptr;
    if (archive_read_open2(reader_.get(), this, nullptr, &indexed_member::fill,
                           &indexed_member::advance, nullptr) == ARCHIVE_OK) {
      const int status = archive_read_next_header(reader_.get(), &entry);
      if (status >= ARCHIVE_WARN && plain_entry(status, entry))
        name = archive_entry_pathname(entry);
    }
    if (name == nullptr || member_.name != name ||
        archive_entry_size(entry) != member_.size ||
        archive_entry_filetype(entry) != AE_IFREG) {
      // A header that libarchive reads in the middle of an archive can
      // fail its format check as the first one.
      mismatched_ = true;
      open_error_ = "the header at byte " + std::to_string(member_.offset) +
                    " does not read as " + member_.name + " on its own";
      reader_.reset();
      return false;
    }
    return true;
  }

  static la_ssize_t fill(archive* reader, void* self_pointer,
                         const void** out) {
    auto* self = static_cast<indexed_member*>(self_pointer);
    const ssize_t got = ::pread(self->fd_, self->buffer_.data(),
                                self->buffer_.size(), self->position_);
    if (got < 0) {
      archive_set_error(reader, errno, "read failed: %s", std::strerror(errno));
      return ARCHIVE_FATAL;
    }
    self->position_ += got;
    *out = self->buffer_.data();
    return got;
  }

  static la_int64_t advance(archive*, void* self_pointer, la_int64_t request) {
    static_cast<indexed_member*>(self_pointer)->position_ += request;
    return request;
  }

  int fd_;
  const tar_member& member_;
  std::vector<char>& buffer_;
  int64_t position_;
  std::unique_ptr<archive, int (*)(archive*)> reader_{nullptr, archive_read_free};
  std::string open_error_;
  bool mismatched_ = false;
};

// Returns whether the file at `path` has the ustar magic of a tar header.
bool has_ustar_magic(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  char header[262] = {};
  file.read(header, sizeof header);
  return file.gcount() == sizeof header &&
         std::memcmp(header + 257, "ustar", 5) == 0;
}

class shard_scanner {
 public:
  shard_scanner(const std::string& shard_name, const webdataset_options& options)
      : shard_name_(shard_name), options_(options) {}

  shard_scan scan(const std::string& path) {
    path_ = path;
    const bool partial =
        options_.range_begin > 0 || options_.range_end < INT64_MAX;
    std::unique_ptr<open_file> file;
    std::optional<file_identity> identity;
    if (options_.index_cache != nullptr && partial) {
      file = std::make_unique<open_file>(path);
      identity = file->identity();
    }
    if (identity) {
      auto& cache = options_.index_cache->state();
      if (auto* found = cache.find(path, *identity)) {
        if (!found->index) {
          identity.reset();  // scan, and store nothing
        } else {
          shard_scanner indexed(shard_name_, options_);
          indexed.path_ = path;
          if (indexed.scan_indexed(file->fd(), *found->index)) {
            cache.hits++;
            return std::move(indexed.result_);
          }
          cache.fallbacks++;
          found->index = nullptr;
          identity.reset();
        }
      }
    }

    std::unique_ptr<archive, int (*)(archive*)> reader(nullptr,
                                                       archive_read_free);
    auto open_reader = [&](bool tar_only) {
      reader.reset(archive_read_new());
      if (tar_only)
        archive_read_set_format(reader.get(), ARCHIVE_FORMAT_TAR);
      else
        archive_read_support_format_tar(reader.get());
      archive_read_support_filter_all(reader.get());
      return archive_read_open_filename(reader.get(), path.c_str(), 1 << 16) ==
             ARCHIVE_OK;
    };
    // Format detection rejects a first header whose checksum does not
    // match. A file with the ustar magic is then read as tar regardless,
    // so that the damage is reported like any other.
    if (!open_reader(false) && !(has_ustar_magic(path) && open_reader(true))) {
      // libarchive reads the first block to detect the format when opening,
      // so a file that opens is there but is no archive it can read.
      if (std::ifstream(path, std::ios::binary).good())
        report("corrupt_tar", shard_name_ + "@0", error_text(reader.get()), 0);
      else
        report("unreadable_file", shard_name_, error_text(reader.get()), 0);
      return std::move(result_);
    }

    // An uncompressed shard's header positions are file offsets, so its
    // entries can serve later range reads when this scan ends cleanly.
    std::shared_ptr<tar_index> index;
    plain_file_ = archive_filter_code(reader.get(), 0) == ARCHIVE_FILTER_NONE;
    if (identity && plain_file_)
      index = std::make_shared<tar_index>();
    streamed_member access(reader.get());
    // Where the next header starts when the archive is intact.
    int64_t next_header = 0;
    for (;;) {
      archive_entry* entry = nullptr;
      int status = archive_read_next_header(reader.get(), &entry);
      // After a header with a bad checksum, libarchive returns a retry for
      // each block until the next header that reads.
      if (status == ARCHIVE_RETRY) {
        if (damage_start_ < 0)
          damage_start_ = archive_read_header_position(reader.get());
        index.reset();
        continue;
      }
      const bool after_damage = damage_start_ >= 0;
      if (after_damage)
        report_damage(status, archive_read_header_position(reader.get()));
      if (status == ARCHIVE_EOF) {
        // Stored only when the file read is still the one at `path`.
        if (index && file->identity() == identity &&
            identity_of_path(path) == identity)
          options_.index_cache->state().store(path, *identity, index);
        break;
      }
      auto offset = archive_read_header_position(reader.get());
      if (status < ARCHIVE_WARN) {
        // libarchive gives no position after a fatal error. Without
        // damage before it, the header was where the last member ended.
        if (offset < 0 && !after_damage)
          offset = next_header;
        header_failed(error_text(reader.get()), offset);
        break;
      }
      std::string name = archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "";
      const bool regular = archive_entry_filetype(entry) == AE_IFREG;
      const int64_t size = archive_entry_size(entry);
      // libarchive carries state from one header to the next (sparse
      // maps, pax attributes of hard links), which a reader that starts
      // at a member would lack. Only shards without such entries and
      // without damaged headers are stored.
      if (index && !plain_entry(status, entry))
        index.reset();
      if (index)
        index->members.push_back({offset, name, size, regular});
      next_header = archive_filter_bytes(reader.get(), -1) +
                    (std::max<int64_t>(size, 0) + 511) / 512 * 512;
      if (!regular)
        continue;
      if (!read_member(access, name, size, offset))
        break;
    }
    return std::move(result_);
  }

 private:
  void report(const std::string& kind, const std::string& where,
              const std::string& detail, int64_t owner_offset) {
    result_.problems.push_back({{kind, where, detail}, owner_offset});
  }

  // Reports the blocks skipped from damage_start_ up to the read that
  // returned `status` at `position`, and drops the sample before them.
  void report_damage(int status, int64_t position) {
    std::string detail =
        "header checksum does not match, so libarchive skipped ";
    if (status == ARCHIVE_EOF) {
      detail += "from byte " + std::to_string(damage_start_);
      // Offsets count uncompressed bytes, so a compressed file cannot be
      // checked for data after the block that ended the archive.
      if (!plain_file_)
        detail += " to the end of the archive, or to an all-zero block that "
                  "it took for the end";
      else if (!data_after(position))
        detail += " to the end of the archive";
      else
        detail += " to an all-zero block at byte " + std::to_string(position) +
                  ", which it took for the end of the archive. The rest of "
                  "the file is not read";
    } else if (status < ARCHIVE_WARN) {
      detail += "from byte " + std::to_string(damage_start_) +
                " until reading failed (next record)";
    } else {
      detail += std::to_string(position - damage_start_) + " bytes from byte " +
                std::to_string(damage_start_) +
                " to the next valid header at byte " + std::to_string(position);
      drop_next_group_ = true;
    }
    damage_record_ = result_.problems.size();
    damage_detail_ = detail + ".";
    damage_dropped_.clear();
    if (!result_.groups.empty()) {
      result_.groups.back().bad = true;
      damage_dropped_.push_back(result_.groups.back().key);
    }
    report("corrupt_tar", shard_name_ + "@" + std::to_string(damage_start_),
           damage_detail(),
           result_.groups.empty() ? damage_start_
                                  : result_.groups.back().first_offset);
    damage_start_ = -1;
  }

  // Returns the detail of the last damage record with the samples dropped.
  std::string damage_detail() const {
    if (damage_dropped_.empty())
      return damage_detail_;
    std::string samples;
    for (const auto& key : damage_dropped_)
      samples += (samples.empty() ? "'" : "' and '") + key;
    return damage_detail_ + " Dropped sample" +
           (damage_dropped_.size() > 1 ? "s " : " ") + samples +
           "', because the damaged member may belong to " +
           (damage_dropped_.size() > 1 ? "either." : "it.");
  }

  // Returns whether the shard has a byte other than zero after `offset`.
  bool data_after(int64_t offset) const {
    std::ifstream file(path_, std::ios::binary);
    file.seekg(offset);
    char block[4096];
    while (file.read(block, sizeof block) || file.gcount() > 0) {
      for (std::streamsize i = 0; i < file.gcount(); ++i)
        if (block[i] != 0)
          return true;
    }
    return false;
  }

  // Records a header that libarchive could not read at `offset` and drops
  // the sample before it, which the unread member may belong to.
  void header_failed(const std::string& text, int64_t offset) {
    const size_t first = result_.problems.size();
    tar_failed(text, offset, "");
    auto& record = result_.problems[first].record;
    if (record.kind == "corrupt_tar")
      record.detail += ". No later sample of the shard is read";
    if (!result_.groups.empty() && !result_.groups.back().bad) {
      result_.groups.back().bad = true;
      record.detail += ". Dropped sample '" + result_.groups.back().key +
                       "', because the unread member may belong to it";
    }
    record.detail += ".";
  }

  bool in_range(const member_group& group) const {
    return group.first_offset >= options_.range_begin &&
           group.first_offset < options_.range_end;
  }

  // Reads the data of the range's members through `index`, whose entries
  // stand in for the headers of the file open at `fd`. Returns false when
  // a member's header does not read on its own as the index expects.
  bool scan_indexed(int fd, const tar_index& index) {
    std::vector<char> buffer(1 << 16);
    for (const auto& member : index.members) {
      if (!member.regular)
        continue;
      indexed_member access(fd, member, buffer);
      const bool more =
          read_member(access, member.name, member.size, member.offset);
      if (access.mismatched())
        return false;
      if (!more)
        break;
    }
    return true;
  }

  // Records a read error at `offset` and drops the sample it interrupted.
  void tar_failed(const std::string& text, int64_t offset,
                  const std::string& member) {
    bool truncated = lower(text).find("truncated") != std::string::npos ||
                     lower(text).find("premature") != std::string::npos;
    // libarchive has no position for a header it could not read.
    std::string where =
        offset >= 0 ? shard_name_ + "@" + std::to_string(offset)
        : last_member_.empty() ? shard_name_ + "@0"
                               : shard_name_ + " after " + last_member_;
    if (!member.empty())
      where += " (" + member + ")";
    const int64_t owner = result_.groups.empty()
                              ? std::max<int64_t>(offset, 0)
                              : result_.groups.back().first_offset;
    std::string detail = text;
    std::error_code status;
    const auto size = std::filesystem::file_size(path_, status);
    if (truncated && !status)
      detail += " (the file ends at byte " + std::to_string(size) +
                ", so no later sample of the shard is read)";
    report(truncated ? "truncated_tar" : "corrupt_tar", where, detail, owner);
    if (!member.empty() && !result_.groups.empty() &&
        result_.groups.back().key == current_key_)
      result_.groups.back().bad = true;
  }

  // Skips the member's data; returns false when the archive cannot be
  // read any further.
  bool skip_data(member_access& access, int64_t offset,
                 const std::string& member) {
    if (access.skip())
      return true;
    tar_failed(access.error(), offset, member);
    return false;
  }

  // Returns false when the archive cannot be read any further.
  bool read_member(member_access& access, const std::string& name,
                   int64_t size, int64_t offset) {
    const auto slash = name.rfind('/');
    const std::string base =
        slash == std::string::npos ? name : name.substr(slash + 1);
    const auto dot = base.find('.');
    // Files without an extension or hidden files belong to no sample.
    if (base.empty() || base[0] == '.' || dot == std::string::npos)
      return skip_data(access, offset, name);
    const std::string key = name.substr(0, name.size() - base.size() + dot);
    const std::string extension = base.substr(dot + 1);
    const auto role = role_of(extension);

    member_group& group = group_for(key, name, offset);
    if (std::exchange(drop_next_group_, false) && !group.bad) {
      group.bad = true;
      damage_dropped_.push_back(key);
      result_.problems[damage_record_].record.detail = damage_detail();
    }
    current_key_ = key;
    last_member_ = name;
    group.members.push_back(name);
    if (role == member_role::other)
      return skip_data(access, offset, name);

    if (size < 0 || static_cast<uint64_t>(size) > options_.max_member_bytes) {
      report("oversize", shard_name_ + ":" + name,
             std::to_string(size) + " bytes exceed max_document_bytes " +
                 std::to_string(options_.max_member_bytes),
             group.first_offset);
      group.bad = true;
      return skip_data(access, offset, name);
    }
    // Samples of other reads count for the checks that need member names
    // only (split, missing and duplicate members); their data is skipped.
    if (!in_range(group)) {
      if (role == member_role::image) {
        group.bad |= group.has_image;
        group.has_image = true;
      } else {
        group.bad |= group.has_caption;
        group.has_caption = true;
      }
      return skip_data(access, offset, name);
    }
    std::string data(static_cast<size_t>(size), '\0');
    size_t filled = 0;
    while (filled < data.size()) {
      auto got = access.read(data.data() + filled, data.size() - filled);
      if (got < 0) {
        tar_failed(access.error(), offset, name);
        return false;
      }
      if (got == 0)
        break;
      filled += static_cast<size_t>(got);
    }
    if (filled < data.size()) {
      report("truncated_tar", shard_name_ + "@" + std::to_string(offset) +
                                  " (" + name + ")",
             "member holds " + std::to_string(filled) + " of " +
                 std::to_string(size) + " bytes",
             group.first_offset);
      group.bad = true;
      return false;
    }

    if (role == member_role::image) {
      if (group.has_image) {
        report("duplicate_member", shard_name_ + ":" + name,
               "key '" + key + "' already has the image " +
                   group.sample.image_member,
               group.first_offset);
        group.bad = true;
        return true;
      }
      group.has_image = true;
      group.sample.image = std::move(data);
      group.sample.image_extension = lower(extension);
      group.sample.image_member = name;
      return true;
    }

    if (group.has_caption) {
      report("duplicate_member", shard_name_ + ":" + name,
             "key '" + key + "' already has a caption", group.first_offset);
      group.bad = true;
      return true;
    }
    group.has_caption = true;
    if (role == member_role::text_caption) {
      group.sample.caption = std::move(data);
      return true;
    }
    rapidjson::Document record;
    record.Parse(data.data(), data.size());
    if (record.HasParseError()) {
      report("bad_caption", shard_name_ + ":" + name,
             std::string(rapidjson::GetParseError_En(record.GetParseError())) +
                 " at byte " + std::to_string(record.GetErrorOffset()),
             group.first_offset);
      group.bad = true;
      return true;
    }
    // MemberEnd and FindMember assert that the value is an object, so a
    // caption that is an array, a number or a string is checked first.
    if (!record.IsObject()) {
      report("bad_caption", shard_name_ + ":" + name,
             "the caption file holds JSON that is not an object",
             group.first_offset);
      group.bad = true;
      return true;
    }
    auto field = record.FindMember(options_.caption_field.c_str());
    if (field == record.MemberEnd() || !field->value.IsString()) {
      report("bad_caption", shard_name_ + ":" + name,
             "no string field '" + options_.caption_field + "'",
             group.first_offset);
      group.bad = true;
      return true;
    }
    group.sample.caption.assign(field->value.GetString(),
                                field->value.GetStringLength());
    return true;
  }

  // Returns the group of `key`, opening a new one when the previous member
  // had another key. A key that comes back after another key is split.
  member_group& group_for(const std::string& key, const std::string& member,
                          int64_t offset) {
    if (!result_.groups.empty() && result_.groups.back().key == key)
      return result_.groups.back();
    auto seen = index_.find(key);
    if (seen != index_.end()) {
      auto& earlier = result_.groups[seen->second];
      report("split_sample", shard_name_ + ":" + member,
             "key '" + key + "' continues after members of other keys "
             "(first member " + earlier.members.front() +
                 "); members of a sample must be adjacent",
             earlier.first_offset);
      earlier.bad = true;
      // Later members of the key go to a fresh group that stays bad, so
      // the key never yields a sample. It belongs to the earlier group's
      // read, which reports the problem. The push may move `earlier`.
      const int64_t owner = earlier.first_offset;
      result_.groups.push_back(member_group{});
      result_.groups.back().key = key;
      result_.groups.back().first_offset = owner;
      result_.groups.back().bad = true;
      index_[key] = result_.groups.size() - 1;
      return result_.groups.back();
    }
    result_.groups.push_back(member_group{});
    result_.groups.back().key = key;
    result_.groups.back().sample.key = shard_name_ + ":" + key;
    result_.groups.back().first_offset = offset;
    index_[key] = result_.groups.size() - 1;
    return result_.groups.back();
  }

  std::string shard_name_;
  std::string path_;
  const webdataset_options& options_;
  shard_scan result_;
  std::map<std::string, size_t> index_;
  std::string current_key_;
  std::string last_member_;
  bool plain_file_ = true;  // the shard is not compressed
  int64_t damage_start_ = -1;  // first damaged block not yet reported
  // The last damage record: its index, its text and the samples it drops.
  size_t damage_record_ = 0;
  std::string damage_detail_;
  std::vector<std::string> damage_dropped_;
  bool drop_next_group_ = false;  // the next sample follows damaged blocks
};

// Reports groups that lack a member, after the scan saw the whole shard.
void check_complete(shard_scan& scan, const std::string& shard_name) {
  for (auto& group : scan.groups) {
    if (group.bad || (group.has_image && group.has_caption))
      continue;
    std::string members;
    for (const auto& name : group.members)
      members += (members.empty() ? "" : ", ") + name;
    scan.problems.push_back(
        {{"missing_member", shard_name + ":" + group.members.front(),
          std::string("key '") + group.key + "' has no " +
              (group.has_image ? "caption (.txt or .json)"
                               : "image (.jpg, .jpeg or .png)") +
              "; members: " + members},
         group.first_offset});
    group.bad = true;
  }
}

// Applies the policy to `problems`: throws for fail, empties `kept` for
// quarantine (adding one record for it), and leaves the good samples for
// skip.
template <class T>
void apply_policy(bad_input_action action, const std::string& shard_name,
                  std::vector<bad_record>& problems, std::vector<T>& kept) {
  if (problems.empty())
    return;
  if (action == bad_input_action::fail) {
    const auto& first = problems.front();
    throw error(errc::invalid_input,
                first.where + ": " + first.kind + ": " + first.detail +
                    " (on_bad_input is fail; fix the data or set "
                    "on_bad_input: skip or quarantine)");
  }
  if (action == bad_input_action::quarantine) {
    problems.push_back(
        {"quarantined", shard_name,
         std::to_string(problems.size()) + " bad sample(s); all " +
             std::to_string(kept.size()) +
             " good sample(s) of the shard dropped too"});
    kept.clear();
  }
}

}  // namespace

bool compressed_shard(const std::string& path) {
  static const std::vector<std::string> signatures = {
      std::string("\x1f\x8b", 2),                  // gzip
      std::string("BZh", 3),                         // bzip2
      std::string("\xfd" "7zXZ\x00", 6),           // xz
      std::string("\x28\xb5\x2f\xfd", 4),        // zstd
      std::string("\x04\x22\x4d\x18", 4),        // lz4
  };
  std::ifstream file(path, std::ios::binary);
  char head[6] = {};
  file.read(head, sizeof head);
  const std::string start(head, static_cast<size_t>(file.gcount()));
  for (const auto& signature : signatures)
    if (start.compare(0, signature.size(), signature) == 0)
      return true;
  return false;
}

const char* to_string(bad_input_action action) {
  switch (action) {
    case bad_input_action::skip:
      return "skip";
    case bad_input_action::quarantine:
      return "quarantine";
    default:
      return "fail";
  }
}

namespace {

// A kept sample with the offset that orders it among the problems.
struct owned_sample {
  webdataset_sample sample;
  int64_t offset = 0;
};

// Scans the shard and returns the good samples and the problems of the
// range in `options`, without applying the policy.
void scan_range(const std::string& path, const std::string& shard_name,
                const webdataset_options& options,
                std::vector<owned_sample>& samples,
                std::vector<owned_problem>& problems) {
  shard_scanner scanner(shard_name, options);
  auto scan = scanner.scan(path);
  check_complete(scan, shard_name);
  auto owned = [&](int64_t offset) {
    return offset >= options.range_begin && offset < options.range_end;
  };
  for (auto& group : scan.groups)
    if (!group.bad && owned(group.first_offset))
      samples.push_back({std::move(group.sample), group.first_offset});
  for (auto& problem : scan.problems)
    if (owned(problem.owner_offset))
      problems.push_back(std::move(problem));
}

// Returns the records of `problems` ordered by the sample they concern,
// so that reads of consecutive ranges report in the order a whole read
// does.
std::vector<bad_record> in_shard_order(std::vector<owned_problem> problems) {
  std::stable_sort(problems.begin(), problems.end(),
                   [](const owned_problem& a, const owned_problem& b) {
                     return a.owner_offset < b.owner_offset;
                   });
  std::vector<bad_record> records;
  for (auto& problem : problems)
    records.push_back(std::move(problem.record));
  return records;
}

}  // namespace

webdataset_result read_webdataset_shard(const std::string& path,
                                        const std::string& shard_name,
                                        const webdataset_options& options) {
  std::vector<owned_sample> samples;
  std::vector<owned_problem> problems;
  scan_range(path, shard_name, options, samples, problems);
  webdataset_result result;
  for (auto& kept : samples)
    result.samples.push_back(std::move(kept.sample));
  result.skipped = in_shard_order(std::move(problems));
  apply_policy(options.on_bad_input, shard_name, result.skipped,
               result.samples);
  return result;
}

image_text_result read_image_text_shard(const std::string& path,
                                        const std::string& shard_name,
                                        const webdataset_options& options,
                                        const image_options& image) {
  std::vector<owned_sample> samples;
  std::vector<owned_problem> problems;
  scan_range(path, shard_name, options, samples, problems);

  image_text_result result;
  for (auto& kept : samples) {
    auto& sample = kept.sample;
    const std::string where = shard_name + ":" + sample.image_member;
    try {
      image_text_sample decoded;
      decoded.image = decode_image(sample.image, where, image);
      decoded.key = std::move(sample.key);
      decoded.caption = std::move(sample.caption);
      decoded.encoded_image = std::move(sample.image);
      decoded.image_member = std::move(sample.image_member);
      result.samples.push_back(std::move(decoded));
    } catch (const error& e) {
      if (e.code() != errc::invalid_input)
        throw;
      // decode_image's message starts with `where`; keep only the reason.
      std::string detail = e.what();
      if (detail.rfind(where + ": ", 0) == 0)
        detail = detail.substr(where.size() + 2);
      problems.push_back({{"bad_image", where, detail}, kept.offset});
    }
  }
  result.skipped = in_shard_order(std::move(problems));
  apply_policy(options.on_bad_input, shard_name, result.skipped,
               result.samples);
  return result;
}

}  // namespace overlord::sources
