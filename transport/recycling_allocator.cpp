#include "transport/recycling_allocator.hpp"

#include <cstdlib>
#include <new>

namespace overlord::transport {

namespace {

constexpr size_t small_step = size_t{64} << 10;
constexpr size_t large_step = size_t{1} << 20;

// A batch of 8 rows of 4096 tokens with 16 MiB of images needs about
// 17 MiB. A constructor node frees a few such blocks per step, so 256 MiB
// in 16 blocks lets several ranks reuse theirs. Batches under 4 MiB are
// left to malloc: with 8 ranks of 1.3 MB image batches, keeping their
// blocks added about 20 MB to the node for no measured gain.
constexpr size_t batch_kept_bytes = size_t{256} << 20;
constexpr size_t batch_kept_blocks = 16;
constexpr size_t batch_min_kept_size = size_t{4} << 20;

}  // namespace

recycling_allocator::recycling_allocator(size_t max_kept_bytes,
                                         size_t max_kept_blocks,
                                         size_t min_kept_size)
    : max_kept_bytes_(max_kept_bytes),
      max_kept_blocks_(max_kept_blocks),
      min_kept_size_(min_kept_size) {}

recycling_allocator::~recycling_allocator() {
  for (auto& [size, block] : free_)
    std::free(block);
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
    // A block more than twice as large would be wasted on this request and
    // missed by a larger one.
    if (found != free_.end() && found->first <= 2 * capacity) {
      uint8_t* block = found->second;
      kept_bytes_ -= found->first;
      free_.erase(found);
      ++reused_;
      return block;
    }
  }

  // A new block gets a quarter more room, so that the next, slightly
  // larger batch can reuse it. Pages that are never written cost no
  // memory.
  const size_t fresh = block_size(capacity + capacity / 4);
  auto* block = static_cast<uint8_t*>(std::malloc(fresh));
  if (!block)
    throw std::bad_alloc();
  std::lock_guard<std::mutex> guard(mutex_);
  capacity_[block] = fresh;
  return block;
}

void recycling_allocator::deallocate(uint8_t* p, size_t size) {
  if (!p)
    return;
  if (size < min_kept_size_) {
    std::free(p);
    return;
  }
  {
    std::lock_guard<std::mutex> guard(mutex_);
    const size_t capacity = capacity_.at(p);
    if (free_.size() < max_kept_blocks_ &&
        kept_bytes_ + capacity <= max_kept_bytes_) {
      free_.emplace(capacity, p);
      kept_bytes_ += capacity;
      return;
    }
    capacity_.erase(p);
  }
  std::free(p);
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
