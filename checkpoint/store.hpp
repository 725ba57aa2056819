// The checkpoint directory: snapshot files and one append-only delta log.
// Every record is framed with a magic number, its length and a CRC-32,
// so a torn or corrupt record is detected and reported with its path.
// Snapshots are written to a temporary file, synced and renamed, so a
// crash mid-write leaves the previous snapshot intact. Owned by the
// planner actor; not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace overlord::checkpoint {

struct loaded_snapshot {
  uint64_t step = 0;
  std::string path;
  std::string payload;
};

struct loaded_deltas {
  std::vector<std::string> payloads;
  // True when the log ends in a partial record (a crash mid-append); the
  // partial record is ignored.
  bool torn_tail = false;
};

class checkpoint_store {
 public:
  // Opens (creating if needed) the directory `dir` and locks it for this
  // store. Throws overlord::error(io_error) when it cannot be created or
  // written, and error(unavailable) when another store has it open.
  explicit checkpoint_store(std::string dir);
  ~checkpoint_store();

  checkpoint_store(const checkpoint_store&) = delete;
  checkpoint_store& operator=(const checkpoint_store&) = delete;

  // Writes the snapshot of the state before `step` and returns the bytes
  // written, frame included. Keeps the newest `keep` snapshots.
  uint64_t write_snapshot(uint64_t step, const std::string& payload,
                          int keep = 3);

  // Appends one delta record and syncs it to disk before returning.
  uint64_t append_delta(const std::string& payload);

  // The newest snapshot for a step <= `at_most`, or nothing. Throws
  // overlord::error(invalid_input) naming the file when it is damaged.
  std::optional<loaded_snapshot> load_snapshot(uint64_t at_most) const;

  // Every delta record in log order. Throws overlord::error(invalid_input)
  // naming the log when a record before the last one is damaged.
  loaded_deltas load_deltas() const;

  // Replaces the delta log with `payloads`, atomically (temporary file,
  // sync, rename). A resume uses it to drop what the abandoned run logged
  // for steps at or after the resume step.
  void rewrite_deltas(const std::vector<std::string>& payloads);

  const std::string& directory() const { return dir_; }

 private:
  // Takes the exclusive lock of the directory or throws.
  void lock();

  std::string dir_;
  int delta_fd_ = -1;
  int lock_fd_ = -1;  // holds an exclusive flock on DIR/lock
};

// Frames `payload` as magic, length, CRC-32 and payload.
std::string frame_record(const std::string& payload);

// Splits `data`, the contents of the delta log at `path`, into record
// payloads. A record cut short at the end sets torn_tail. Throws
// overlord::error(invalid_input) naming `path` when a record has a bad
// header or checksum.
loaded_deltas parse_delta_log(const std::string& data, const std::string& path);

// Returns the payload of the one record in `data`, the contents of the
// snapshot file at `path`. Throws overlord::error(invalid_input) naming
// `path` when the record is damaged, cut short or followed by more bytes.
std::string parse_snapshot_file(const std::string& data,
                                const std::string& path);

}  // namespace overlord::checkpoint
