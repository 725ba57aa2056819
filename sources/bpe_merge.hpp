// Byte pair merging for one pre-tokenizer piece, in js-tiktoken's order, in
// O(n log n) time for a piece of n bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace overlord::sources {

// Hash table from a pair of adjacent token ids to the id of the token that
// their concatenation is. Immutable after build(), so any number of threads
// may call find() concurrently.
class bpe_pair_table {
 public:
  struct entry {
    int32_t left;
    int32_t right;
    int32_t merged;
  };

  // Replaces the contents with `entries`. Ids must be non-negative, and each
  // (left, right) pair may appear once.
  void build(const std::vector<entry>& entries);

  // Returns the merged id of (left, right), or -1 if the pair does not merge.
  int32_t find(int32_t left, int32_t right) const {
    const uint64_t key = make_key(left, right);
    std::size_t index = hash_key(key) & mask_;
    while (true) {
      const slot& candidate = slots_[index];
      if (candidate.merged < 0)
        return -1;
      if (candidate.key == key)
        return candidate.merged;
      index = (index + 1) & mask_;
    }
  }

  // One more than the largest merged id, or 0 if the table is empty.
  int32_t merged_id_limit() const { return merged_id_limit_; }

 private:
  struct slot {
    uint64_t key = ~uint64_t{0};
    int32_t merged = -1;  // -1 marks an empty slot
  };

  static uint64_t make_key(int32_t left, int32_t right) {
    return (uint64_t{static_cast<uint32_t>(left)} << 32) |
           static_cast<uint32_t>(right);
  }

  // Fibonacci hashing: the multiplication spreads both ids over the high
  // bits.
  static std::size_t hash_key(uint64_t key) {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> 32);
  }

  std::vector<slot> slots_{1};
  std::size_t mask_ = 0;
  int32_t merged_id_limit_ = 0;
};

// Merges the parts of one piece the way js-tiktoken's bytePairMerge does:
// repeatedly, the adjacent pair whose merged id is lowest merges, the
// leftmost one among equal ids, until no adjacent pair merges.
//
// js-tiktoken rescans all pairs after each merge, which takes O(n^2) time
// for n parts. This class keeps the parts in a linked list and the candidate
// pairs in a priority queue, so a merge costs O(log n). A merge changes only
// the pairs next to it: the two pairs it creates are queued, and queued
// entries of the pairs it destroys are skipped when they come up.
//
// Ownership and thread safety: the object owns reusable buffers, so each
// thread needs its own. Not thread-safe.
class bpe_merger {
 public:
  // Priority queue layout. Both give the same ids, and `automatic` picks
  // the faster one for the piece size.
  enum class strategy {
    automatic,
    // One binary heap of (merged id, position). Fastest for short pieces.
    binary_heap,
    // Positions bucketed by merged id and swept in id order, with a small
    // heap for pairs that a sweep creates. Fastest for long pieces, where
    // one big heap spends its time on cache misses.
    id_buckets,
  };

  // Pieces of at least this many parts use `id_buckets` under `automatic`.
  static constexpr std::size_t id_buckets_min_parts = 256;

  // Merges `part_ids[0, count)` and appends the resulting ids to `out`.
  // Throws overlord::error if `count` does not fit in 32 bits.
  void merge(const bpe_pair_table& pairs, const int32_t* part_ids,
             std::size_t count, std::vector<int32_t>& out,
             strategy chosen = strategy::automatic);

 private:
  struct part {
    int32_t id;  // -1 once the part has merged into its left neighbour
    uint32_t next;
    uint32_t previous;
  };

  bool try_merge(const bpe_pair_table& pairs, int32_t merged, uint32_t left);
  void merge_with_binary_heap(const bpe_pair_table& pairs);
  void merge_with_id_buckets(const bpe_pair_table& pairs);

  std::vector<part> parts_;
  // Heap keys: merged id << 32 | position of the left part. The smallest key
  // is the pair that js-tiktoken merges next.
  std::vector<uint64_t> heap_;
  // For id_buckets: positions_by_id_[id] lists left positions of pairs that
  // merge into id, and pending_ids_ is a min-heap of the ids whose list is
  // not empty.
  std::vector<std::vector<uint32_t>> positions_by_id_;
  std::vector<int32_t> pending_ids_;
};

}  // namespace overlord::sources
