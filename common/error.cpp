#include "common/error.hpp"

namespace overlord {

const char* to_string(errc code) {
  switch (code) {
    case errc::invalid_config:
      return "invalid_config";
    case errc::invalid_input:
      return "invalid_input";
    case errc::io_error:
      return "io_error";
    case errc::not_found:
      return "not_found";
    case errc::timeout:
      return "timeout";
    case errc::unavailable:
      return "unavailable";
    case errc::internal:
      return "internal";
  }
  return "unknown";
}

}  // namespace overlord
