#include "transport/recycling_allocator.hpp"

#include <cstdlib>
#include <new>

namespace overlord::transport {

namespace {

constexpr size_t small_step = size_t{64} << 10;
constexpr size_t large_step = size_t{1} << 20;

// A batch of 8 rows of 4096 tokens with 16 MiB of images needs about
// 17 MiB. A constructor node frees a few such blocks per step, so 256 MiB
// in 16 blocks lets several ranks reuse theirs.
constexpr size_t batch_kept_bytes = size_t{256} << 20;
constexpr size_t batch_kept_blocks = 16;

}  // namespace

recycling_allocator::recycling_allocator(size_t max_kept_bytes,
                                         size_t max_kept_blocks)
    : max_kept_bytes_(max_kept_bytes), max_kept_blocks_(max_kept_blocks) {}

recycling_allocator::~recycling_allocator() {
  for (auto& [size, block] : free_)
    std::free(block);
}

size_t recycling_allocator::block_size(size_t size) {
  const size_t step = size >= large_step ? large_step : small_step;
  return (size + step - 1) / step * step;
}

uint8_t* recycling_allocator::allocate(size_t size) {
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

void recycling_allocator::deallocate(uint8_t* p, size_t) {
  if (!p)
    return;
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
      new recycling_allocator(batch_kept_bytes, batch_kept_blocks);
  return *allocator;
}

}  // namespace overlord::transport
