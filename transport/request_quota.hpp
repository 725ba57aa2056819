// Open requests per client at a server. A constructor remembers a request
// for a step it has not built yet until it can reply, so without a bound
// one client could make it hold any number of them. Plain state, owned by
// one actor; not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>

namespace overlord::transport {

class request_quota {
 public:
  explicit request_quota(uint32_t max_per_client)
      : max_per_client_(max_per_client) {}

  // Records a new open request of `client` and returns true, or returns
  // false and counts a rejection when the client already has
  // max_per_client open.
  bool try_open(const std::string& client) {
    auto& count = open_[client];
    if (count >= max_per_client_) {
      ++rejected_;
      return false;
    }
    ++count;
    return true;
  }

  // Records that one request of `client` got its reply.
  void close(const std::string& client) {
    auto found = open_.find(client);
    if (found == open_.end())
      return;
    if (--found->second == 0)
      open_.erase(found);
  }

  // Forgets every open request (the server dropped them).
  void clear() { open_.clear(); }

  uint32_t open(const std::string& client) const {
    auto found = open_.find(client);
    return found == open_.end() ? 0 : found->second;
  }

  uint32_t max_per_client() const { return max_per_client_; }
  uint64_t rejected() const { return rejected_; }

 private:
  uint32_t max_per_client_;
  std::map<std::string, uint32_t> open_;
  uint64_t rejected_ = 0;
};

}  // namespace overlord::transport
