#include "common/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>

#include "common/error.hpp"

namespace overlord {

namespace {

std::mutex registry_mutex;
spdlog::level::level_enum default_level = spdlog::level::info;

}  // namespace

std::shared_ptr<spdlog::logger> get_logger(const std::string& name) {
  std::lock_guard<std::mutex> guard(registry_mutex);
  if (auto existing = spdlog::get(name))
    return existing;
  // Logs go to stderr so that tools can keep stdout for their output.
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  logger->set_level(default_level);
  return logger;
}

void set_log_level(const std::string& level) {
  auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off")
    throw error(errc::invalid_config,
                "unknown log level '" + level +
                    "': use trace, debug, info, warn, error or off");
  std::lock_guard<std::mutex> guard(registry_mutex);
  default_level = parsed;
  spdlog::set_level(parsed);
}

}  // namespace overlord
