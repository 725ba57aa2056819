#pragma once

// Which worker of a source pool takes the pool's next read. Reads are
// released in order, so a read queued behind another read on a busy
// worker holds back every later read while another worker idles.

#include <cstddef>
#include <optional>
#include <vector>

namespace overlord::actors {

// Reads shorter than this on average may queue a second read per worker.
// Without it, a worker idles for one round trip to the pool after each
// read, which costs short reads more than a queued read's delay.
constexpr double short_read_ms = 10;

// Returns how many reads one worker may hold in flight when a read takes
// `read_ms` on average (0 before the first read is back).
inline size_t reads_per_worker(double read_ms) {
  return read_ms > 0 && read_ms < short_read_ms ? 2 : 1;
}

// Returns the index of the worker with the fewest reads in flight
// (`loads`), the first of equals from `start` on, or nothing when every
// worker already has `per_worker` reads in flight.
inline std::optional<size_t> least_busy_worker(const std::vector<size_t>& loads,
                                               size_t start, size_t per_worker) {
  std::optional<size_t> best;
  size_t best_load = per_worker;
  for (size_t i = 0; i < loads.size(); ++i) {
    const size_t index = (start + i) % loads.size();
    if (loads[index] < best_load) {
      best = index;
      best_load = loads[index];
    }
  }
  return best;
}

}  // namespace overlord::actors
