// Project-wide error type for the plain libraries (config, sources,
// planner, checkpoint). Actors catch it at their boundaries and turn it into
// a log line or a caf::error for the requester.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace overlord {

// What the caller should do about a failure. Values are stable because they
// travel in wire records.
enum class errc : uint8_t {
  invalid_config = 1,  // fix the configuration or command line
  invalid_input = 2,   // fix or skip the input data
  io_error = 3,        // the file system or a peer failed; retry may help
  not_found = 4,       // a named file, source or key does not exist
  timeout = 5,         // a peer sent no reply in time; retry or check it
  unavailable = 6,     // the service is shutting down or not ready yet
  internal = 7,        // a bug: report it
};

const char* to_string(errc code);

class error : public std::runtime_error {
 public:
  error(errc code, const std::string& message)
      : std::runtime_error(message), code_(code) {}

  errc code() const noexcept { return code_; }

 private:
  errc code_;
};

}  // namespace overlord
