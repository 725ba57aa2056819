#include "transport/recycling_allocator.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <new>

// Linux 5.14 added it. Older headers lack the constant, and older kernels
// reject the call, which then costs nothing.
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace overlord::transport {

namespace {

constexpr size_t small_step = size_t{64} << 10;
constexpr size_t large_step = size_t{1} << 20;

// A batch of 8 rows of 4096 tokens with 16 MiB of images needs about
// 17 MiB. A constructor node frees a few such blocks per step, so 256 MiB
// in 16 blocks lets several ranks reuse theirs. Batches under 4 MiB are
// left to malloc: with 8 ranks of 1.3 MB image batches, keeping their
// blocks added 20 to 25 MB to the process.
constexpr size_t batch_kept_bytes = size_t{256} << 20;
constexpr size_t batch_kept_blocks = 16;
constexpr size_t batch_min_kept_size = size_t{4} << 20;

// Maps the whole pages of the first `size` bytes of `block` in one call
// instead of one page fault each. A caller that requests more than it
// writes gets those pages mapped too. On failure (an old kernel) the pages
// fault in as they are written.
void populate(uint8_t* block, size_t size) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(block);
  const uintptr_t first = (begin + page - 1) / page * page;
  const uintptr_t last = (begin + size) / page * page;
  if (last > first)
    (void)madvise(reinterpret_cast<void*>(first), last - first,
                  MADV_POPULATE_WRITE);
}

}  // namespace

recycling_allocator::recycling_allocator(size_t max_kept_bytes,
                                         size_t max_kept_blocks,
                                         size_t min_kept_size)
    : max_kept_bytes_(max_kept_bytes),
      max_kept_blocks_(max_kept_blocks),
      min_kept_size_(min_kept_size) {}

recycling_allocator::~recycling_allocator() {
  for (auto& [size, kept] : free_)
    std::free(kept.block);
}

size_t recycling_allocator::block_size(size_t size) {
  const size_t step = size >= large_step ? large_step : small_step;
  return (size + step - 1) / step * step;
}

uint8_t* recycling_allocator::allocate(size_t size) {
  if (size < min_kept_size_) {
    auto* block = static_cast<uint8_t*>(std::malloc(size == 0 ? 1 : size));
    if (!block)
      throw std::bad_alloc();
    std::lock_guard<std::mutex> guard(mutex_);
    ++allocations_;
    return block;
  }

  const size_t capacity = block_size(size == 0 ? 1 : size);
  {
    std::lock_guard<std::mutex> guard(mutex_);
    ++allocations_;
    auto found = free_.lower_bound(capacity);
    // A block more than twice as large would hold many pages that this
    // batch does not need, and a larger request would miss it.
    const size_t largest = std::max(capacity * 2,
                                    block_size(capacity + capacity / 4));
    if (found != free_.end() && found->first <= largest) {
      uint8_t* block = found->second.block;
      kept_bytes_ -= found->first;
      free_.erase(found);
      ++reused_;
      return block;
    }
  }

  // A new block gets a quarter more room, so that the next, slightly
  // larger batch can reuse it. Only the requested bytes are populated, and
  // the rest costs memory only once written.
  const size_t fresh = block_size(capacity + capacity / 4);
  auto* block = static_cast<uint8_t*>(std::malloc(fresh));
  if (!block)
    throw std::bad_alloc();
  populate(block, size);
  try {
    std::lock_guard<std::mutex> guard(mutex_);
    capacity_[block] = fresh;
  } catch (...) {
    std::free(block);
    throw;
  }
  return block;
}

void recycling_allocator::deallocate(uint8_t* p, size_t) {
  if (!p)
    return;
  std::lock_guard<std::mutex> guard(mutex_);
  auto known = capacity_.find(p);
  if (known == capacity_.end()) {
    std::free(p);  // a small block from malloc
    return;
  }
  const size_t capacity = known->second;
  if (capacity > max_kept_bytes_ || max_kept_blocks_ == 0) {
    capacity_.erase(known);
    std::free(p);
    return;
  }

  // A full pool drops the blocks it kept longest, so that blocks of a
  // costly stretch do not sit unused in place of current ones.
  while (free_.size() >= max_kept_blocks_ ||
         kept_bytes_ + capacity > max_kept_bytes_) {
    auto oldest = free_.begin();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->second.order < oldest->second.order)
        oldest = it;
    kept_bytes_ -= oldest->first;
    capacity_.erase(oldest->second.block);
    std::free(oldest->second.block);
    free_.erase(oldest);
  }
  free_.emplace(capacity, kept_block{p, next_order_++});
  kept_bytes_ += capacity;
}

recycling_allocator::counts recycling_allocator::stats() const {
  std::lock_guard<std::mutex> guard(mutex_);
  return {allocations_, reused_, kept_bytes_, free_.size()};
}

recycling_allocator& batch_allocator() {
  // Never destroyed: see the header.
  static auto* allocator =
      new recycling_allocator(batch_kept_bytes, batch_kept_blocks,
                              batch_min_kept_size);
  return *allocator;
}

}  // namespace overlord::transport
