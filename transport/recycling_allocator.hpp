// A flatbuffers::Allocator that keeps freed blocks and hands them out
// again. A constructor builds each batch into one block of up to tens of
// megabytes (images included). A block fresh from the system costs one
// page fault per 4 KiB page on first write, and the kernel zeroes each
// page. When decoding kept every core busy, that was about half of a
// batch's layout time. A reused block is mapped already, and a new one's
// requested bytes are mapped in one madvise(MADV_POPULATE_WRITE) call.
//
// Thread-safe: a batch is built on an actor thread and freed on whichever
// thread drops its last reference (often ZeroMQ's I/O thread).
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>

namespace overlord::transport {

class recycling_allocator : public flatbuffers::Allocator {
 public:
  // Keeps at most `max_kept_blocks` free blocks and `max_kept_bytes` in
  // them. Past either limit the blocks kept longest go back to the system.
  // Requests under `min_kept_size` bytes go to malloc and free as they
  // are: their page faults cost little, and keeping them would hold memory.
  recycling_allocator(size_t max_kept_bytes, size_t max_kept_blocks,
                      size_t min_kept_size = 0);
  ~recycling_allocator() override;

  recycling_allocator(const recycling_allocator&) = delete;
  recycling_allocator& operator=(const recycling_allocator&) = delete;

  // Returns a kept block of at least `size` bytes and at most about twice
  // that, or a new one with a quarter more room than asked for. Throws
  // std::bad_alloc.
  uint8_t* allocate(size_t size) override;
  // Keeps or frees `p`, which must come from allocate().
  void deallocate(uint8_t* p, size_t size) override;

  struct counts {
    uint64_t allocations = 0;  // calls to allocate
    uint64_t reused = 0;       // of them, served from a kept block
    size_t kept_bytes = 0;     // bytes in kept free blocks now
    size_t kept_blocks = 0;
  };
  counts stats() const;

  // The capacity a request of `size` bytes is rounded up to: a multiple of
  // 64 KiB, or of 1 MiB from 1 MiB on, so that batches of similar size
  // share blocks.
  static size_t block_size(size_t size);

 private:
  const size_t max_kept_bytes_;
  const size_t max_kept_blocks_;
  const size_t min_kept_size_;
  struct kept_block {
    uint8_t* block = nullptr;
    uint64_t order = 0;  // when it was kept, to drop the oldest first
  };

  mutable std::mutex mutex_;
  std::multimap<size_t, kept_block> free_;  // capacity -> block
  std::unordered_map<uint8_t*, size_t> capacity_;  // every live block
  size_t kept_bytes_ = 0;
  uint64_t next_order_ = 0;
  uint64_t allocations_ = 0;
  uint64_t reused_ = 0;
};

// The allocator of every batch a constructor in this process builds. It
// lives as long as the process, because ZeroMQ may free a sent batch
// during shutdown, after every actor is gone.
recycling_allocator& batch_allocator();

}  // namespace overlord::transport
