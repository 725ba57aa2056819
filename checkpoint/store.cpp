#include "checkpoint/store.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.hpp"

namespace fs = std::filesystem;

namespace overlord::checkpoint {

namespace {

constexpr char magic[4] = {'O', 'V', 'C', 'K'};
constexpr size_t header_size = 12;  // magic, length, CRC-32
constexpr const char* delta_log_name = "deltas.log";
constexpr const char* snapshot_prefix = "snapshot-";
constexpr const char* snapshot_suffix = ".ovck";

void put_u32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint32_t get_u32(const char* data) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i)
    value = (value << 8) | static_cast<unsigned char>(data[i]);
  return value;
}

uint32_t crc_of(const std::string& payload) {
  return static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(payload.data()),
            static_cast<uInt>(payload.size())));
}

[[noreturn]] void io_failure(const std::string& what, const std::string& path) {
  throw error(errc::io_error, what + " " + path + ": " + std::strerror(errno));
}

void write_all(int fd, const std::string& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      io_failure("cannot write", path);
    }
    done += static_cast<size_t>(n);
  }
}

void sync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    io_failure("cannot read", path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
}

// Parses one framed record at `offset`. Returns false when fewer bytes
// remain than the frame announces; throws when the frame is corrupt.
bool parse_frame(const std::string& data, size_t& offset, std::string& payload,
                 const std::string& path) {
  if (data.size() - offset < header_size)
    return false;
  if (std::memcmp(data.data() + offset, magic, 4) != 0)
    throw error(errc::invalid_input,
                path + ": bad record header at byte " + std::to_string(offset) +
                    "; the file is corrupt");
  uint32_t length = get_u32(data.data() + offset + 4);
  uint32_t crc = get_u32(data.data() + offset + 8);
  if (data.size() - offset - header_size < length)
    return false;
  payload = data.substr(offset + header_size, length);
  if (crc_of(payload) != crc)
    throw error(errc::invalid_input,
                path + ": checksum mismatch in the record at byte " +
                    std::to_string(offset) + "; the file is corrupt");
  offset += header_size + length;
  return true;
}

std::string snapshot_name(uint64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "%s%020llu%s", snapshot_prefix,
                static_cast<unsigned long long>(step), snapshot_suffix);
  return name;
}

std::vector<std::pair<uint64_t, std::string>> list_snapshots(
    const std::string& dir) {
  std::vector<std::pair<uint64_t, std::string>> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    auto name = entry.path().filename().string();
    if (name.rfind(snapshot_prefix, 0) != 0 ||
        entry.path().extension() != snapshot_suffix)
      continue;
    auto digits = name.substr(std::strlen(snapshot_prefix), 20);
    if (digits.size() != 20 ||
        !std::all_of(digits.begin(), digits.end(), ::isdigit))
      continue;
    found.emplace_back(std::stoull(digits), entry.path().string());
  }
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

std::string frame_record(const std::string& payload) {
  std::string out(magic, 4);
  put_u32(out, static_cast<uint32_t>(payload.size()));
  put_u32(out, crc_of(payload));
  out += payload;
  return out;
}

checkpoint_store::checkpoint_store(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec)
    throw error(errc::io_error, "cannot create checkpoint directory " + dir_ +
                                    ": " + ec.message());
  lock();
  try {
    // Temporary files left by a crash mid-write are never read; clear them.
    for (const auto& entry : fs::directory_iterator(dir_))
      if (entry.path().extension() == ".tmp")
        fs::remove(entry.path(), ec);
    auto log = (fs::path(dir_) / delta_log_name).string();
    delta_fd_ = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                       0644);
    if (delta_fd_ < 0)
      io_failure("cannot open", log);
  } catch (...) {
    // The destructor does not run for a constructor that throws.
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw;
  }
}

checkpoint_store::~checkpoint_store() {
  if (delta_fd_ >= 0)
    ::close(delta_fd_);
  // Closing the file releases the lock.
  if (lock_fd_ >= 0)
    ::close(lock_fd_);
}

void checkpoint_store::lock() {
  const auto path = (fs::path(dir_) / "lock").string();
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0)
    io_failure("cannot open", path);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int failure = errno;
    char owner[32] = {};
    const auto got = ::pread(lock_fd_, owner, sizeof owner - 1, 0);
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (failure != EWOULDBLOCK)
      throw error(errc::io_error, "cannot lock " + path + ": " +
                                      std::strerror(failure));
    // Two writers would interleave their records in one delta log. The
    // pid is the one the holder wrote, maybe on another host or container.
    throw error(errc::unavailable,
                "checkpoint directory " + dir_ +
                    " is in use by another planner" +
                    (got > 0 ? " (pid " + std::string(owner, got) + ")"
                             : std::string()) +
                    "; stop it first, or give this run its own "
                    "checkpoint_dir");
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(lock_fd_, 0) != 0 ||
      ::pwrite(lock_fd_, pid.data(), pid.size(), 0) !=
          static_cast<ssize_t>(pid.size()))
    io_failure("cannot write", path);
}

uint64_t checkpoint_store::write_snapshot(uint64_t step,
                                          const std::string& payload,
                                          int keep) {
  auto final_path = (fs::path(dir_) / snapshot_name(step)).string();
  auto temporary = final_path + ".tmp";
  auto framed = frame_record(payload);

  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                  0644);
  if (fd < 0)
    io_failure("cannot create", temporary);
  write_all(fd, framed, temporary);
  if (::fsync(fd) != 0) {
    ::close(fd);
    io_failure("cannot sync", temporary);
  }
  ::close(fd);
  if (::rename(temporary.c_str(), final_path.c_str()) != 0)
    io_failure("cannot rename to", final_path);
  sync_directory(dir_);

  auto snapshots = list_snapshots(dir_);
  for (size_t i = 0; i + keep < snapshots.size(); ++i) {
    std::error_code ec;
    fs::remove(snapshots[i].second, ec);
  }
  return framed.size();
}

uint64_t checkpoint_store::append_delta(const std::string& payload) {
  auto framed = frame_record(payload);
  auto log = (fs::path(dir_) / delta_log_name).string();
  write_all(delta_fd_, framed, log);
  if (::fdatasync(delta_fd_) != 0)
    io_failure("cannot sync", log);
  return framed.size();
}

void checkpoint_store::rewrite_deltas(const std::vector<std::string>& payloads) {
  auto log = (fs::path(dir_) / delta_log_name).string();
  auto temporary = log + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                  0644);
  if (fd < 0)
    io_failure("cannot create", temporary);
  std::string bytes;
  for (const auto& payload : payloads)
    bytes += frame_record(payload);
  write_all(fd, bytes, temporary);
  if (::fsync(fd) != 0) {
    ::close(fd);
    io_failure("cannot sync", temporary);
  }
  ::close(fd);
  if (::rename(temporary.c_str(), log.c_str()) != 0)
    io_failure("cannot rename to", log);
  sync_directory(dir_);
  // Appends go to the new file from now on.
  ::close(delta_fd_);
  delta_fd_ = ::open(log.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (delta_fd_ < 0)
    io_failure("cannot open", log);
}

std::optional<loaded_snapshot> checkpoint_store::load_snapshot(
    uint64_t at_most) const {
  auto snapshots = list_snapshots(dir_);
  for (auto it = snapshots.rbegin(); it != snapshots.rend(); ++it) {
    if (it->first > at_most)
      continue;
    auto payload = parse_snapshot_file(read_file(it->second), it->second);
    return loaded_snapshot{it->first, it->second, std::move(payload)};
  }
  return std::nullopt;
}

loaded_deltas checkpoint_store::load_deltas() const {
  auto log = (fs::path(dir_) / delta_log_name).string();
  return parse_delta_log(read_file(log), log);
}

loaded_deltas parse_delta_log(const std::string& data,
                              const std::string& path) {
  loaded_deltas out;
  size_t offset = 0;
  std::string payload;
  while (offset < data.size()) {
    if (!parse_frame(data, offset, payload, path)) {
      out.torn_tail = true;
      break;
    }
    out.payloads.push_back(std::move(payload));
  }
  return out;
}

std::string parse_snapshot_file(const std::string& data,
                                const std::string& path) {
  size_t offset = 0;
  std::string payload;
  if (!parse_frame(data, offset, payload, path) || offset != data.size())
    throw error(errc::invalid_input,
                path + ": truncated or padded snapshot; the file is corrupt");
  return payload;
}

}  // namespace overlord::checkpoint
