#include "sources/bpe_merge.hpp"

#include <algorithm>
#include <functional>
#include <limits>
#include <string>

#include "common/error.hpp"

namespace overlord::sources {

namespace {

constexpr uint32_t no_part = std::numeric_limits<uint32_t>::max();

uint64_t make_heap_key(int32_t merged, uint32_t left) {
  return (uint64_t{static_cast<uint32_t>(merged)} << 32) | left;
}

void push_heap_key(std::vector<uint64_t>& heap, uint64_t key) {
  heap.push_back(key);
  std::push_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
}

uint64_t pop_heap_key(std::vector<uint64_t>& heap) {
  std::pop_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
  const uint64_t key = heap.back();
  heap.pop_back();
  return key;
}

}  // namespace

// ---------------------------------------------------------------------------
// bpe_pair_table

void bpe_pair_table::build(const std::vector<entry>& entries) {
  // A capacity of at least twice the entry count keeps linear probing short.
  std::size_t capacity = 16;
  while (capacity < 2 * entries.size())
    capacity *= 2;
  slots_.assign(capacity, slot{});
  mask_ = capacity - 1;
  merged_id_limit_ = 0;

  for (const entry& added : entries) {
    const uint64_t key = make_key(added.left, added.right);
    std::size_t index = hash_key(key) & mask_;
    while (slots_[index].merged >= 0)
      index = (index + 1) & mask_;
    slots_[index] = {key, added.merged};
    merged_id_limit_ = std::max(merged_id_limit_, added.merged + 1);
  }
}

// ---------------------------------------------------------------------------
// bpe_merger

void bpe_merger::merge(const bpe_pair_table& pairs, const int32_t* part_ids,
                       std::size_t count, std::vector<int32_t>& out,
                       strategy chosen) {
  if (count >= no_part)
    throw error(errc::invalid_input,
                "cannot merge a pre-tokenizer piece of " +
                    std::to_string(count) +
                    " bytes: pieces must be shorter than 4 GiB; split the "
                    "document at whitespace");

  const auto size = static_cast<uint32_t>(count);
  parts_.resize(size);
  for (uint32_t i = 0; i < size; ++i) {
    parts_[i].id = part_ids[i];
    parts_[i].next = i + 1 < size ? i + 1 : no_part;
    parts_[i].previous = i > 0 ? i - 1 : no_part;
  }

  if (chosen == strategy::automatic)
    chosen = count >= id_buckets_min_parts ? strategy::id_buckets
                                           : strategy::binary_heap;
  if (chosen == strategy::id_buckets)
    merge_with_id_buckets(pairs);
  else
    merge_with_binary_heap(pairs);

  for (uint32_t i = 0; i != no_part && size != 0; i = parts_[i].next)
    out.push_back(parts_[i].id);
}

bool bpe_merger::try_merge(const bpe_pair_table& pairs, int32_t merged,
                           uint32_t left) {
  // Skip an entry whose pair an earlier merge destroyed. Every current pair
  // has an entry with its key, and entries come out smallest key first. So
  // if the part at `left` and its right neighbour still merge into
  // `merged`, this key is the smallest of any current pair, and merging it
  // is what js-tiktoken's full rescan would do.
  part& left_part = parts_[left];
  if (left_part.id < 0 || left_part.next == no_part)
    return false;
  part& right_part = parts_[left_part.next];
  if (pairs.find(left_part.id, right_part.id) != merged)
    return false;

  left_part.id = merged;
  right_part.id = -1;
  left_part.next = right_part.next;
  if (left_part.next != no_part)
    parts_[left_part.next].previous = left;
  return true;
}

void bpe_merger::merge_with_binary_heap(const bpe_pair_table& pairs) {
  heap_.clear();
  const auto queue_pair = [&](uint32_t left) {
    if (left == no_part || parts_[left].next == no_part)
      return;
    const int32_t merged =
        pairs.find(parts_[left].id, parts_[parts_[left].next].id);
    if (merged >= 0)
      push_heap_key(heap_, make_heap_key(merged, left));
  };

  for (uint32_t i = 0; i + 1 < parts_.size(); ++i) {
    const int32_t merged = pairs.find(parts_[i].id, parts_[i + 1].id);
    if (merged >= 0)
      heap_.push_back(make_heap_key(merged, i));
  }
  std::make_heap(heap_.begin(), heap_.end(), std::greater<uint64_t>());

  while (!heap_.empty()) {
    const uint64_t key = pop_heap_key(heap_);
    const auto left = static_cast<uint32_t>(key);
    if (!try_merge(pairs, static_cast<int32_t>(key >> 32), left))
      continue;
    queue_pair(parts_[left].previous);
    queue_pair(left);
  }
}

void bpe_merger::merge_with_id_buckets(const bpe_pair_table& pairs) {
  // Merged ids are processed in increasing order. While the sweep of id
  // `current` runs, a merge can create pairs with an id at or below
  // `current`. Those go to the small heap_, so the next pair to merge is the
  // smaller of heap_'s top and the sweep's next position. Pairs with a
  // larger id wait in their bucket. A bucket is sorted by position when its
  // sweep starts, because pairs may have been added to it in any order.
  if (positions_by_id_.size() < static_cast<std::size_t>(pairs.merged_id_limit()))
    positions_by_id_.resize(pairs.merged_id_limit());
  heap_.clear();
  pending_ids_.clear();
  int32_t current = -1;

  const auto queue_pair = [&](uint32_t left) {
    if (left == no_part || parts_[left].next == no_part)
      return;
    const int32_t merged =
        pairs.find(parts_[left].id, parts_[parts_[left].next].id);
    if (merged < 0)
      return;
    if (merged <= current) {
      push_heap_key(heap_, make_heap_key(merged, left));
      return;
    }
    std::vector<uint32_t>& bucket = positions_by_id_[merged];
    if (bucket.empty()) {
      pending_ids_.push_back(merged);
      std::push_heap(pending_ids_.begin(), pending_ids_.end(),
                     std::greater<int32_t>());
    }
    bucket.push_back(left);
  };

  for (uint32_t i = 0; i + 1 < parts_.size(); ++i)
    queue_pair(i);

  while (!pending_ids_.empty()) {
    std::pop_heap(pending_ids_.begin(), pending_ids_.end(),
                  std::greater<int32_t>());
    current = pending_ids_.back();
    pending_ids_.pop_back();

    // Sweeping never adds to this bucket, because new pairs with id
    // `current` go to heap_, so the reference stays valid.
    std::vector<uint32_t>& bucket = positions_by_id_[current];
    std::sort(bucket.begin(), bucket.end());
    std::size_t cursor = 0;

    while (true) {
      int32_t merged;
      uint32_t left;
      const bool sweep_left = cursor < bucket.size();
      if (!heap_.empty() &&
          (!sweep_left || heap_.front() < make_heap_key(current, bucket[cursor]))) {
        const uint64_t key = pop_heap_key(heap_);
        merged = static_cast<int32_t>(key >> 32);
        left = static_cast<uint32_t>(key);
      } else if (sweep_left) {
        merged = current;
        left = bucket[cursor++];
      } else {
        break;
      }

      if (!try_merge(pairs, merged, left))
        continue;
      queue_pair(parts_[left].previous);
      queue_pair(left);
    }
    bucket.clear();
  }
}

}  // namespace overlord::sources
