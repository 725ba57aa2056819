// Counter-based random numbers: every draw is a pure function of a key and
// a counter, so any step, epoch or shard order can be recomputed on its own
// without replaying the draws before it.
#pragma once

#include <cstdint>
#include <numeric>
#include <string_view>
#include <vector>

namespace overlord::planner {

// SplitMix64's output function: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Returns the `counter`-th 64-bit draw of the stream named by `key`.
inline uint64_t draw(uint64_t key, uint64_t counter) {
  return mix64(mix64(key) ^ mix64(counter ^ 0x5851f42d4c957f2dULL));
}

// Derives a stream key from a parent key and a label (seed -> source ->
// epoch, seed -> step).
inline uint64_t derive_key(uint64_t parent, uint64_t label) {
  return draw(parent, label);
}

// FNV-1a, 64 bit: a stable hash of names that does not change between
// builds or platforms, unlike std::hash.
inline uint64_t stable_hash(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

// Returns a uniform integer in [0, bound) from a 64-bit draw (Lemire's
// multiply-shift; the bias is below 2^-32 for the bounds used here).
inline uint64_t bounded(uint64_t random, uint64_t bound) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(random) * bound) >>
                               64);
}

// Returns a permutation of 0..count-1 drawn by Fisher-Yates from `key`.
inline std::vector<uint32_t> shuffled_order(uint32_t count, uint64_t key) {
  std::vector<uint32_t> order(count);
  std::iota(order.begin(), order.end(), 0u);
  for (uint32_t i = count; i > 1; --i) {
    auto j = bounded(draw(key, i), i);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

// The shard order of `epoch` for the source called `source_name`.
inline std::vector<uint32_t> epoch_shard_order(uint32_t shard_count,
                                               uint64_t seed,
                                               std::string_view source_name,
                                               uint32_t epoch) {
  auto key = derive_key(derive_key(seed, stable_hash(source_name)), epoch);
  return shuffled_order(shard_count, key);
}

}  // namespace overlord::planner
